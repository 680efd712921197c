"""The score as a FHIR R4 Observation (`Accept: application/fhir+json`), validated with fhir.resources.

fhir.resources 8 ships R4B (FHIR 4.3), whose Observation has the same shape as R4. The Observation says
plainly that the value is a model estimate (method, device, note), never a clinician's rating, so an EHR can
file it apart from nurse-entered pain scores.
"""

from __future__ import annotations

import datetime as dt

from fhir.resources.R4B.observation import Observation

from avpenet import contract
from preprocess_service.protocol import ScoreResponse

MEDIA_TYPE = "application/fhir+json"
LOINC = "http://loinc.org"
PAIN_SEVERITY_CODE = "72514-3"
PAIN_SEVERITY_DISPLAY = "Pain severity - 0-10 verbal numeric rating [Score] - Reported"
UCUM = "http://unitsofmeasure.org"
LEVEL_SYSTEM = "urn:avpenet:pain-level"  # low | moderate | high (contract.LEVELS)
REQUEST_ID_SYSTEM = "urn:avpenet:request-id"
METHOD_TEXT = (
    "Automated estimate by the AVPENet audio-visual model from non-speech sound and facial expression"
)


def observation(
    result: ScoreResponse,
    *,
    subject_ref: str | None = None,
    encounter_ref: str | None = None,
    when: dt.datetime | None = None,
) -> Observation:
    """A final Observation carrying the clip score; raises ValidationError if it is not valid FHIR."""
    when = when or dt.datetime.now(dt.UTC)
    versions = ", ".join(f"{name} v{v}" for name, v in sorted(result.model_versions.items()))
    low, high = result.interval_90.low, result.interval_90.high
    resource = {
        "resourceType": "Observation",
        "id": result.request_id,
        "identifier": [{"system": REQUEST_ID_SYSTEM, "value": result.request_id}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                        "display": "Survey",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": PAIN_SEVERITY_CODE, "display": PAIN_SEVERITY_DISPLAY}],
            "text": "Pain severity 0-10 (model estimate)",
        },
        "effectiveDateTime": when.isoformat(),
        "issued": when.isoformat(),
        "valueQuantity": {
            "value": round(result.score, 2),
            "unit": "{score}",
            "system": UCUM,
            "code": "{score}",
        },
        "interpretation": [
            {
                "coding": [{"system": LEVEL_SYSTEM, "code": result.level, "display": f"{result.level} pain"}],
                "text": f"{result.level} pain (low 0-3, moderate 3-6, high 6-10)",
            }
        ],
        "method": {"text": METHOD_TEXT},
        "device": {"display": f"AVPENet Serve ({result.model_name}; {versions or 'version unknown'})"},
        "component": [
            _component("90% prediction interval, lower bound", low),
            _component("90% prediction interval, upper bound", high),
            *(
                _component(f"probability of {level} pain", p, unit="1")
                for level, p in result.class_probs.items()
            ),
        ],
        "note": [
            {
                "text": (
                    f"Model estimate, not a clinician rating. {len(result.timeline)} window(s) over "
                    f"{result.duration_s:.1f} s; modalities: {', '.join(result.modalities)}; weights audio "
                    f"{result.modality_weights.audio:.2f} / visual {result.modality_weights.visual:.2f}; "
                    f"{int(contract.INTERVAL_COVERAGE * 100)}% interval {low:.1f}-{high:.1f}."
                )
            }
        ],
    }
    if subject_ref:
        resource["subject"] = {"reference": subject_ref}
    if encounter_ref:
        resource["encounter"] = {"reference": encounter_ref}
    return Observation.model_validate(resource)


def _component(text: str, value: float, unit: str = "{score}") -> dict:
    return {
        "code": {"text": text},
        "valueQuantity": {"value": round(float(value), 4), "unit": unit, "system": UCUM, "code": unit},
    }


def observation_json(result: ScoreResponse, **kwargs) -> str:
    return observation(result, **kwargs).model_dump_json(exclude_none=True)
