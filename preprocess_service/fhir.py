"""The score as FHIR R4: an Observation (with its Device contained), or a transaction Bundle of Observation,
Device and Provenance. Every resource is validated with fhir.resources before it leaves the gateway.

Why these choices (docs/INTEGRATION.md has the full reasoning):
- R4 is emitted, validated with fhir.resources' R4B models: no maintained package has R4 models on pydantic
  2 (fhir.resources >= 7 ships R5/R4B/STU3, 6.x is pydantic 1, google-fhir-r4 needs protobuf 3). R4B changed
  none of Observation, Device, Provenance or Bundle; `R4_ELEMENTS` lists the R4 elements and tests check that
  nothing else is emitted. The content type says `fhirVersion=4.0`.
- `code` is a local code in a CodeSystem the deployment sets (no LOINC/SNOMED code means "a model's 0-10
  estimate of observer-rated pain"), with SNOMED CT 406127006 |Pain intensity| as the broader concept.
  That system is the hospital's (e.g. its flowsheet rows): only the Observation's own code goes there. The
  product's sub-codes (components, method, level) are in its own fixed CodeSystem, `PRODUCT_SYSTEM`.
- `status` is preliminary until a clinician confirms; `meta.security` carries AIAST (AI asserted).

Why one module over 300 lines: the four resources reference each other and are validated together
against the R4 element lists kept here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance

from avpenet import contract
from preprocess_service.protocol import ScoreResponse

MEDIA_TYPE = "application/fhir+json"
CONTENT_TYPE = f"{MEDIA_TYPE}; fhirVersion=4.0"  # the R4 version parameter of the FHIR mime type
FHIR_VERSION = "4.0.1"
STATUSES = ("registered", "preliminary", "final", "amended")  # what a deployment may configure
KINDS = ("observation", "bundle")

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
V3_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
PAIN_INTENSITY = {"system": SNOMED, "code": "406127006", "display": "Pain intensity (observable entity)"}
AI_ASSERTED = {"system": V3_OBSERVATION_VALUE, "code": "AIAST", "display": "Artificial Intelligence asserted"}
# Severity qualifiers for the interpretation: low 0-3 / moderate 3-6 / high 6-10 (contract.LEVEL_EDGES).
LEVEL_SNOMED = {
    "low": ("255604002", "Mild (qualifier value)"),
    "moderate": ("6736007", "Moderate (severity modifier) (qualifier value)"),
    "high": ("24484000", "Severe (severity modifier) (qualifier value)"),
}
NIPS_MAX = 7  # Neonatal Infant Pain Scale 0-7; neonatal labels were NIPS rescaled x10/7
SCORE_UNIT = {"unit": "{score}", "system": UCUM, "code": "{score}"}
RATIO_UNIT = {"unit": "1", "system": UCUM, "code": "1"}
# The product's own codes (components, method, level): fixed, whatever CodeSystem the deployment binds its
# Observation code to, so no code is claimed in a hospital's system that does not exist there.
PRODUCT_SYSTEM = "urn:avpenet:fhir:CodeSystem:pain-estimate"
UUID_NS = uuid.UUID("7b1d6c52-4a0e-4b8e-9a55-6a1f3c2b9e10")  # stable urn:uuid fullUrls for one request
# The figures in these notes, written into a patient's record, are the served reference's (fusion 22) on
# its 313 test clips: `avpenet evaluate --data S --json OUT --send-age unknown`, `age_inferred`
# (docs/EVALUATION.md, *No age group* and *A named age group questioned*). A new reference measures them
# again and changes them.
UNKNOWN_AGE_NOTE = (
    "No age group was sent: the model read it from the clip{read} (right for 99% of its test clips with "
    "sound and face, 94% with the face alone, 79% with the sound alone; a wrong one shifts the estimate). "
    "Send neonate or adult."
)
CONTRADICTED_AGE_NOTE = (
    "Check the age group: the clip reads as {group} (P(adult) {p:.2f}), not as the {named} the request "
    "named. On the test clips a reading this sure came for none named right, and for 90% of those named "
    "wrong with sound and face (72% with the face alone, 37% with the sound alone). The estimate is "
    "conditioned on the age group sent{nips}."
)
FHIR_ID_RE = re.compile(r"^[A-Za-z0-9.-]{1,64}$")  # FHIR's `id` type: no '_', which request ids may hold


def contradicted_age_note(result: ScoreResponse) -> str:
    """The note on a request whose clip surely reads as the other age group than the one it named."""
    read = result.age_read
    nips = ", and so is its NIPS-equivalent" if result.age_group == "neonate" else ""
    return CONTRADICTED_AGE_NOTE.format(
        named=result.age_group, group=read.group, p=read.adult_probability, nips=nips
    )


def unknown_age_note(result: ScoreResponse) -> str:
    """The note on a request without an age group, naming the group read when the model reported it."""
    read = result.age_read
    return UNKNOWN_AGE_NOTE.format(
        read="" if read is None else f" as {read.group} (P(adult) {read.adult_probability:.2f})"
    )


def shown_level(result: ScoreResponse) -> str:
    """The level of the score as the documents show it (2 decimals): 3.004 is shown 3.00, so it reads low,
    not moderate, beside a legend that says low 0-3."""
    return contract.level_of(round(result.score, 2))


def resource_id(request_id: str) -> str:
    """The Observation's `id`: the request id where it is a valid FHIR id, else a uuid5 of it, the same for
    every retry (the request id itself stays the Observation's identifier, which de-duplicates)."""
    return request_id if FHIR_ID_RE.fullmatch(request_id) else str(uuid.uuid5(UUID_NS, f"{request_id}/id"))


@dataclass(frozen=True)
class FhirConfig:
    """What a deployment binds: the CodeSystem URI and code of the Observation's own `code` (so the hospital
    maps it to a flowsheet row). Sub-codes are the product's (`product`), never in that system."""

    code_system: str = PRODUCT_SYSTEM
    code: str = "pain-estimate-0-10"
    display: str = "Pain severity 0-10, estimated by the AVPENet audio-visual model (not a rating)"
    status: str = "preliminary"
    identifier_system: str = "urn:avpenet:fhir:observation-id"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"fhir status must be one of {', '.join(STATUSES)}")

    def coding(self) -> dict[str, str]:
        """The Observation's own code, in the deployment's CodeSystem."""
        return {"system": self.code_system, "code": self.code, "display": self.display}


def product(code: str, display: str) -> dict[str, str]:
    """A sub-code of the product (a component, the method, the level) in `PRODUCT_SYSTEM`."""
    return {"system": PRODUCT_SYSTEM, "code": code, "display": display}


@dataclass(frozen=True)
class Context:
    """The request's clinical context: references (validated upstream, never logged)."""

    subject_ref: str | None = None
    encounter_ref: str | None = None


NO_CONTEXT = Context()
DEFAULT_CONFIG = FhirConfig()


def device_id(result: ScoreResponse) -> str:
    """A stable id per set of served versions: the same model build is one Device in the EHR."""
    blob = json.dumps(sorted(result.model_versions.items())).encode()
    return f"avpenet-{hashlib.sha256(blob).hexdigest()[:16]}"


def device(result: ScoreResponse) -> dict[str, Any]:
    """The model as a Device: name, software kind, and the version of the ensemble and of every part."""
    versions = [
        {"type": {"text": "ensemble" if name == result.model_name else "model part"},
         "component": {"value": name}, "value": str(version)}
        for name, version in sorted(result.model_versions.items())
    ]  # fmt: skip
    return {
        "resourceType": "Device",
        "id": device_id(result),
        "identifier": [{"system": "urn:avpenet:fhir:device-id", "value": device_id(result)}],
        "status": "active",
        "manufacturer": "AVPENet Serve",
        "deviceName": [
            {"name": f"AVPENet pain estimation model ({result.model_name})", "type": "model-name"}
        ],
        "type": {
            "text": "Software: AI model estimating pain (0-10) from non-speech sound and facial expression"
        },
        "version": versions,
        "note": [
            {"text": "Decision support only; estimates must be validated by a clinician before filing."}
        ],
    }


def _component(coding: dict[str, str], text: str, **value: Any) -> dict[str, Any]:
    return {"code": {"coding": [coding], "text": text}, **value}


def _components(result: ScoreResponse) -> list[dict[str, Any]]:
    low, high = result.interval_90.low, result.interval_90.high
    pct = int(round(contract.INTERVAL_COVERAGE * 100))
    out = [
        _component(
            product("prediction-interval-90", f"{pct}% prediction interval"),
            f"{pct}% prediction interval of the estimate",
            valueRange={"low": {"value": round(low, 2), **SCORE_UNIT},
                        "high": {"value": round(high, 2), **SCORE_UNIT}},
        ),
        *(
            _component(
                product(f"modality-weight-{m}", f"{m} modality weight"),
                f"share of the {m} modality in the fused estimate",
                valueQuantity={"value": round(getattr(result.modality_weights, m), 4), **RATIO_UNIT},
            )
            for m in ("audio", "visual")
        ),
        *(
            _component(
                product(f"probability-{level}", f"probability of {level} pain"),
                f"model probability of {level} pain",
                valueQuantity={"value": round(p, 4), **RATIO_UNIT},
            )
            for level, p in result.class_probs.items()
        ),
    ]  # fmt: skip
    if (read := result.age_read) is not None:  # none sent, or the one sent is contradicted: the group read
        why = "contradicts the age group sent" if read.contradicts_age_group else "no age group was sent"
        out += [
            _component(
                product("age-group-read", "age group read from the clip"),
                f"age group the model read from the clip ({why})",
                valueString=read.group,
            ),
            _component(
                product("adult-probability-read", "P(adult) read from the clip"),
                "the model's probability that the clip shows an adult",
                valueQuantity={"value": read.adult_probability, **RATIO_UNIT},
            ),
        ]
    if result.age_group == "neonate":
        nips = round(result.score * NIPS_MAX / contract.SCORE_MAX, 1)
        out.append(
            _component(
                product("nips-equivalent-estimate", "NIPS-equivalent estimate (0-7)"),
                "ESTIMATE on the NIPS 0-7 scale (model score x 7/10), not a NIPS assessment by an observer",
                valueQuantity={"value": nips, **SCORE_UNIT},
            )
        )
    return out


def _effective(result: ScoreResponse) -> tuple[str, str | None]:
    """(effectiveDateTime, note): the recording time from the request, else the server's, labelled."""
    if result.recorded_at:
        return result.recorded_at, None
    return result.scored_at, (
        "effectiveDateTime is the time the gateway scored the clip: the request gave no recording time."
    )


def observation(
    result: ScoreResponse,
    ctx: Context = NO_CONTEXT,
    cfg: FhirConfig = DEFAULT_CONFIG,
    *,
    device_ref: str | None = None,
) -> dict[str, Any]:
    """The Observation (validated). Without `device_ref` the Device is contained, so it stands alone."""
    effective, fallback_note = _effective(result)
    level = shown_level(result)
    level_code, level_display = LEVEL_SNOMED[level]
    versions = ", ".join(f"{n} v{v}" for n, v in sorted(result.model_versions.items()))
    notes = [
        f"AI model estimate, not a clinician's rating; to be validated before filing. {len(result.timeline)} "
        f"window(s) over {result.duration_s:.1f} s; modalities: {', '.join(result.modalities)}; {versions}."
    ]
    if fallback_note:
        notes.append(fallback_note)
    if result.age_group == "unknown":  # docs/EVALUATION.md, *No age group*
        notes.append(unknown_age_note(result))
    elif result.age_read is not None and result.age_read.contradicts_age_group:
        notes.append(contradicted_age_note(result))
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": resource_id(result.request_id),
        "meta": {"security": [AI_ASSERTED]},
        "identifier": [{"system": cfg.identifier_system, "value": result.request_id}],
        "status": cfg.status,
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [cfg.coding(), PAIN_INTENSITY], "text": cfg.display},
        "effectiveDateTime": effective,
        "issued": result.scored_at,
        "valueQuantity": {"value": round(result.score, 2), **SCORE_UNIT},
        "interpretation": [
            {
                "coding": [
                    {"system": SNOMED, "code": level_code, "display": level_display},
                    product(f"level-{level}", f"{level} pain"),
                ],
                "text": f"{level} pain (model estimate; low 0-3, moderate 3-6, high 6-10)",
            }
        ],
        "method": {
            "coding": [product("avpenet-audio-visual-model", "AVPENet audio-visual model estimate")],
            "text": "Automated estimate by an AI model from non-speech sound and facial expression",
        },
        "referenceRange": [{"low": {"value": contract.SCORE_MIN, **SCORE_UNIT},
                            "high": {"value": contract.SCORE_MAX, **SCORE_UNIT}, "text": "scale 0-10"}],
        "component": _components(result),
        "note": [{"text": n} for n in notes],
    }  # fmt: skip
    if result.clip_sha256:
        resource["derivedFrom"] = [_clip_reference(result)]
    if device_ref is None:
        resource["contained"] = [device(result)]
        resource["device"] = {"reference": f"#{device_id(result)}"}
    else:
        resource["device"] = {"reference": device_ref}
    if ctx.subject_ref:
        resource["subject"] = {"reference": ctx.subject_ref}
    if ctx.encounter_ref:
        resource["encounter"] = {"reference": ctx.encounter_ref}
    return _valid(Observation, resource)


def _clip_reference(result: ScoreResponse) -> dict[str, Any]:
    """A logical reference to the clip by its SHA-256: the media itself never leaves the gateway."""
    return {
        "type": "Media",
        "identifier": {"system": "urn:avpenet:fhir:clip-sha256", "value": result.clip_sha256},
        "display": f"scored clip ({'+'.join(result.modalities)}), SHA-256 {result.clip_sha256[:16]}...",
    }


def provenance(result: ScoreResponse, target_ref: str, device_ref: str) -> dict[str, Any]:
    """Who made the Observation (the model, as a Device), when, and from what (the clip digest)."""
    effective, _ = _effective(result)
    resource = {
        "resourceType": "Provenance",
        "target": [{"reference": target_ref}],
        "occurredDateTime": effective,
        "recorded": result.scored_at,
        "activity": {"coding": [{"system": V3_DATA_OPERATION, "code": "CREATE", "display": "create"}]},
        "agent": [
            {
                "type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author", "display": "Author"}]},
                "who": {"reference": device_ref, "display": "AVPENet pain estimation model"},
            }
        ],
    }
    if result.clip_sha256:
        resource["entity"] = [{"role": "source", "what": _clip_reference(result)}]
    return _valid(Provenance, resource)


def bundle(
    result: ScoreResponse, ctx: Context = NO_CONTEXT, cfg: FhirConfig = DEFAULT_CONFIG
) -> dict[str, Any]:
    """A transaction Bundle of Device, Observation and Provenance, each created only if absent (a retry
    files nothing twice), linked by urn:uuid."""
    urls = {k: f"urn:uuid:{uuid.uuid5(UUID_NS, f'{result.request_id}/{k}')}" for k in ("obs", "dev", "prov")}
    dev = device(result)
    dev.pop("id")
    ident = dev["identifier"][0]
    obs = observation(result, ctx, cfg, device_ref=urls["dev"])
    obs.pop("id")
    obs_ident = f"identifier={cfg.identifier_system}|{result.request_id}"
    # A re-scored retry (another replica) creates no second Provenance: one exists if its target does (a
    # chained search on Provenance's `target`, R4 search syntax; the server must support chaining there).
    entries = [
        (urls["dev"], dev, {"method": "POST", "url": "Device",
                            "ifNoneExist": f"identifier={ident['system']}|{ident['value']}"}),
        (urls["obs"], obs, {"method": "POST", "url": "Observation", "ifNoneExist": obs_ident}),
        (urls["prov"], provenance(result, urls["obs"], urls["dev"]),
         {"method": "POST", "url": "Provenance", "ifNoneExist": f"target:Observation.{obs_ident}"}),
    ]  # fmt: skip
    resource = {
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": result.scored_at,
        "entry": [{"fullUrl": url, "resource": res, "request": req} for url, res, req in entries],
    }
    return _valid(Bundle, resource)


def _valid(model: type, resource: dict[str, Any]) -> dict[str, Any]:
    """Validate with fhir.resources (raises pydantic.ValidationError) and hand back the plain dict."""
    model.model_validate(resource)
    return resource


def render(
    result: ScoreResponse,
    ctx: Context = NO_CONTEXT,
    cfg: FhirConfig = DEFAULT_CONFIG,
    kind: str = "observation",
) -> str:
    """JSON text of an Observation or a transaction Bundle (`kind`)."""
    if kind not in KINDS:
        raise ValueError(f"FHIR kind must be one of {', '.join(KINDS)}")
    resource = bundle(result, ctx, cfg) if kind == "bundle" else observation(result, ctx, cfg)
    return json.dumps(resource, separators=(",", ":"))


# No digital clip was recorded before this. Earlier times are typing errors or placeholders (year 0099,
# 0001-01-01) that would not fit HL7's four-digit year, or would overflow when converted to UTC.
EARLIEST_RECORDING = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_recorded_at(value: str, now: dt.datetime | None = None, skew_s: float = 300.0) -> str:
    """A recording time as FHIR dateTime with a time zone; ValueError names the reason (format, before
    EARLIEST_RECORDING, future)."""
    text = value.strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time such as 2026-05-01T10:15:00Z") from None
    if when.tzinfo is None:
        raise ValueError("has no time zone; add Z or an offset such as +01:00")
    if when < EARLIEST_RECORDING:  # compared on the UTC time line without converting (no overflow)
        raise ValueError(f"is before {EARLIEST_RECORDING.year}; send the time the clip was recorded")
    now = now or dt.datetime.now(dt.UTC)
    if when - now > dt.timedelta(seconds=skew_s):
        raise ValueError(f"is in the future (more than {int(skew_s)} s after the server's clock)")
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# R4 (4.0.1) element names of the resources emitted here; tests assert nothing outside them is sent.
_R4_DOMAIN = {"resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
              "modifierExtension"}  # fmt: skip
R4_ELEMENTS: dict[str, set[str]] = {
    "Observation": _R4_DOMAIN | {
        "identifier", "basedOn", "partOf", "status", "category", "code", "subject", "focus", "encounter",
        "effectiveDateTime", "effectivePeriod", "effectiveTiming", "effectiveInstant", "issued", "performer",
        "valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger", "valueRange",
        "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod", "dataAbsentReason",
        "interpretation", "note", "bodySite", "method", "specimen", "device", "referenceRange", "hasMember",
        "derivedFrom", "component",
    },
    "Device": _R4_DOMAIN | {
        "identifier", "definition", "udiCarrier", "status", "statusReason", "distinctIdentifier",
        "manufacturer", "manufactureDate", "expirationDate", "lotNumber", "serialNumber", "deviceName",
        "modelNumber", "partNumber", "type", "specialization", "version", "property", "patient", "owner",
        "contact", "location", "url", "note", "safety", "parent",
    },
    "Provenance": _R4_DOMAIN | {
        "target", "occurredPeriod", "occurredDateTime", "recorded", "policy", "location", "reason",
        "activity", "agent", "entity", "signature",
    },
    "Bundle": {"resourceType", "id", "meta", "implicitRules", "language", "identifier", "type", "timestamp",
               "total", "link", "entry", "signature"},
}  # fmt: skip
