"""The score as an HL7 v2.6 ORU^R01 in the shape of IHE PCD-01 (Communicate PCD Data), built and validated
with hl7apy (`Accept: x-application/hl7-v2+er7`, or sent over MLLP by mllp.py).

Shape: MSH (MSH-21 = the IHE PCD-01 profile) / PID (patient id from `subject_ref`, never a name) / PV1 (visit
from `encounter_ref`) / OBR (the scoring run, filler order number = request id) / one OBX per value: the
estimate, the interval bounds, modality weights, class probabilities, the NIPS-equivalent for neonates, the
level and the model versions. Every OBX names the model in OBX-18 (equipment instance identifier), carries
units (UCUM) and the reference range, and result status R (not verified) until a clinician confirms, or F
if the deployment configured `final`. There is no IEEE 11073 (MDC) term for a pain estimate, so OBX-3 is
the deployment's local code (coding system L) with SNOMED CT 406127006 |Pain intensity| as its alternate.
OBX-14 is when the patient was recorded (`recorded_at`); a request without it leaves OBX-14 empty, and an NTE
says that OBR-7 holds the scoring time (as the FHIR Observation's note says of its effectiveDateTime).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from avpenet import contract
from preprocess_service import fhir
from preprocess_service.protocol import ScoreResponse

MEDIA_TYPE = "x-application/hl7-v2+er7"
VERSION = "2.6"
PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
LOCAL = "L"  # HL7 table 0396: locally defined codes
SCORE_UNITS = "{score}^{score}^UCUM"
RATIO_UNITS = "1^1^UCUM"
NO_RECORDING_TIME_NOTE = (
    "The request gave no recording time: OBR-7 is the time the gateway scored the clip, and OBX-14 is empty."
)
SEGMENT_END = "\r"  # every segment, the last one included, ends with a carriage return


@dataclass(frozen=True)
class Hl7Config:
    """Sender/receiver names for MSH-3..6 and the assigning authority of PID-3, set per deployment."""

    sending_application: str = "AVPENET"
    sending_facility: str = "AVPENET"
    receiving_application: str = ""
    receiving_facility: str = ""
    assigning_authority: str = "HOSP"
    processing_id: str = "P"  # P production, T training, D debugging (MSH-11)


def _ts(iso: str) -> str:
    """HL7 DTM (YYYYMMDDHHMMSS+ZZZZ) from an ISO 8601 time with a zone."""
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return when.strftime("%Y%m%d%H%M%S%z")


def escape(text: str) -> str:
    """HL7 escape sequences for the delimiters, so no free text can break the message structure."""
    out = text.replace("\\", "\\E\\")
    for char, esc in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(char, esc)
    return out.replace("\r", " ").replace("\n", " ")


def _ref_id(ref: str | None) -> str:
    """`Patient/123` → `123` (refs are validated upstream to Type/id with plain characters)."""
    return ref.split("/", 1)[1] if ref else ""


def _observations(result: ScoreResponse, cfg: fhir.FhirConfig) -> list[tuple[str, str, str, str, str]]:
    """(value type, OBX-3 code^text, value, units, range) per OBX, the estimate first."""
    code = f"{cfg.code}^{escape(cfg.display)}^{LOCAL}^406127006^Pain intensity^SCT"
    rows = [
        ("NM", code, f"{result.score:.2f}", SCORE_UNITS, "0-10"),
        ("NM", f"prediction-interval-90-low^90% prediction interval low^{LOCAL}",
         f"{result.interval_90.low:.2f}", SCORE_UNITS, "0-10"),
        ("NM", f"prediction-interval-90-high^90% prediction interval high^{LOCAL}",
         f"{result.interval_90.high:.2f}", SCORE_UNITS, "0-10"),
        *(("NM", f"modality-weight-{m}^{m} modality weight^{LOCAL}",
           f"{getattr(result.modality_weights, m):.4f}", RATIO_UNITS, "0-1") for m in ("audio", "visual")),
        *(("NM", f"probability-{lvl}^probability of {lvl} pain^{LOCAL}", f"{p:.4f}", RATIO_UNITS, "0-1")
          for lvl, p in result.class_probs.items()),
    ]  # fmt: skip
    if result.age_read is not None:
        read = result.age_read.group
        rows.append(("ST", f"age-group-read^age group read from the clip^{LOCAL}", read, "", ""))
        rows.append(("NM", f"adult-probability-read^P(adult) read from the clip^{LOCAL}",
                     f"{result.age_read.adult_probability:.4f}", RATIO_UNITS, "0-1"))  # fmt: skip
        if result.age_read.contradicts_age_group:  # a mistyped age: the estimate is conditioned on it
            rows.append(("ST", f"age-group-contradicted^clip contradicts the age group sent^{LOCAL}",
                         f"{result.age_group} sent, {read} read", "", ""))  # fmt: skip
    if result.age_group == "neonate":
        nips = result.score * fhir.NIPS_MAX / contract.SCORE_MAX
        rows.append(("NM", f"nips-equivalent-estimate^NIPS-equivalent ESTIMATE (not a NIPS rating)^{LOCAL}",
                     f"{nips:.1f}", SCORE_UNITS, "0-7"))  # fmt: skip
    snomed, display = fhir.LEVEL_SNOMED[fhir.shown_level(result)]
    rows.append(("CWE", f"level^pain level^{LOCAL}", f"{snomed}^{display}^SCT", "", ""))
    versions = ";".join(f"{n}={v}" for n, v in sorted(result.model_versions.items()))
    rows.append(("ST", f"model-versions^model versions^{LOCAL}", escape(versions), "", ""))
    return rows


def oru_r01(
    result: ScoreResponse,
    ctx: fhir.Context = fhir.NO_CONTEXT,
    cfg: fhir.FhirConfig = fhir.DEFAULT_CONFIG,
    hl7: Hl7Config | None = None,
) -> str:
    """The ER7 text of a validated ORU^R01: every segment ends with CR, the last one too (HL7 v2 chapter 2:
    CR terminates a segment; a receiver may drop or refuse an unterminated last one)."""
    hl7 = hl7 or Hl7Config()
    effective, fallback_note = fhir._effective(result)
    status = "F" if cfg.status in ("final", "amended") else "R"
    msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msh = msg.msh
    msh.msh_3, msh.msh_4 = escape(hl7.sending_application), escape(hl7.sending_facility)
    if hl7.receiving_application:
        msh.msh_5 = escape(hl7.receiving_application)
    if hl7.receiving_facility:
        msh.msh_6 = escape(hl7.receiving_facility)
    msh.msh_7 = _ts(result.scored_at)
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = result.request_id[:199]
    msh.msh_11 = hl7.processing_id
    msh.msh_12 = VERSION
    msh.msh_15, msh.msh_16 = "AL", "NE"  # accept ack always, application ack never (PCD-01)
    msh.msh_21 = PCD01_PROFILE
    patient_result = msg.add_group("ORU_R01_PATIENT_RESULT")
    patient = patient_result.add_group("ORU_R01_PATIENT")
    if ctx.subject_ref:
        patient.pid.pid_3 = f"{_ref_id(ctx.subject_ref)}^^^{escape(hl7.assigning_authority)}^PI"
    else:
        patient.pid.pid_3 = "UNKNOWN^^^AVPENET^U"
    patient.pid.pid_5 = "^^^^^^U"  # name type U (unspecified): names never leave the gateway
    if ctx.encounter_ref:
        visit = patient.add_group("ORU_R01_VISIT")
        visit.pv1.pv1_2 = "U"
        visit.pv1.pv1_19 = _ref_id(ctx.encounter_ref)
    order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    order.obr.obr_3 = f"{result.request_id[:199]}^AVPENET"
    order.obr.obr_4 = f"{cfg.code}^{escape(cfg.display)}^{LOCAL}"
    order.obr.obr_7 = _ts(effective)
    if fallback_note:  # no recording time: OBR-7 (required) holds the scoring time, and says so; no OBX-14
        nte = order.add_segment("NTE")
        nte.nte_1, nte.nte_2, nte.nte_3 = "1", "L", escape(NO_RECORDING_TIME_NOTE)
    device = f"{fhir.device_id(result)}^AVPENET"
    for i, (vtype, code, value, units, ref_range) in enumerate(_observations(result, cfg), start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1, obx.obx_2, obx.obx_3 = str(i), vtype, code
        obx.obx_4 = f"1.0.0.{i}"  # PCD-01 containment: MDS 1, VMD 0, channel 0, metric i
        obx.obx_5 = value
        if units:
            obx.obx_6 = units
        if ref_range:
            obx.obx_7 = ref_range
        obx.obx_11 = status
        if not fallback_note:
            obx.obx_14 = _ts(effective)  # the recording time: when the patient was observed
        obx.obx_17 = f"avpenet-audio-visual-model^AVPENet audio-visual model estimate^{LOCAL}"
        obx.obx_18 = device
        obx.obx_19 = _ts(result.scored_at)
    msg.validate()
    return msg.to_er7() + SEGMENT_END  # hl7apy ends the last segment without one


def parse(er7: str):
    """Parse and strictly validate an ER7 message (hl7apy); raises on any structural or type error."""
    message = parse_message(
        er7.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
    )
    message.validate()
    return message


def ack(message_control_id: str, code: str = "AA", text: str = "") -> str:
    """An original-mode ACK (MSA-1 AA accept, AE error, AR reject) for `message_control_id`."""
    msg = Message("ACK", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msg.msh.msh_3 = "AVPENET-TEST"
    msg.msh.msh_7 = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S%z")
    msg.msh.msh_9 = "ACK^R01^ACK"
    msg.msh.msh_10 = f"ACK{message_control_id}"[:199]
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = VERSION
    msg.msa.msa_1 = code
    msg.msa.msa_2 = message_control_id
    if text:
        msg.msa.msa_3 = escape(text)
    return msg.to_er7() + SEGMENT_END
