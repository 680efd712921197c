"""Unit tests of the HL7 v2.6 ORU^R01 (IHE PCD-01 shape): built, parsed and strictly validated with hl7apy."""

from __future__ import annotations

from clinical_samples import VERSIONS, response

from preprocess_service import fhir, hl7v2

CTX = fhir.Context(subject_ref="Patient/p-17", encounter_ref="Encounter/e-3")


def obx_rows(message) -> list:
    order = message.oru_r01_patient_result.oru_r01_order_observation
    return [group.obx for group in order.children if group.name == "ORU_R01_OBSERVATION"]


def test_message_parses_validates_and_has_the_pcd01_shape():
    er7 = hl7v2.oru_r01(response(), CTX)
    message = hl7v2.parse(er7)  # strict validation: raises on any error
    assert message.msh.msh_9.value == "ORU^R01^ORU_R01" and message.msh.msh_12.value == "2.6"
    assert message.msh.msh_21.value.startswith("IHE_PCD_001")
    patient = message.oru_r01_patient_result.oru_r01_patient
    assert patient.pid.pid_3.value.startswith("p-17^") and patient.pid.pid_5.value == "^^^^^^U"
    rows = obx_rows(message)
    first = rows[0]
    assert first.obx_2.value == "NM" and first.obx_5.value == "6.50"
    assert first.obx_6.value == "{score}^{score}^UCUM" and first.obx_7.value == "0-10"
    assert first.obx_11.value == "R"  # not verified until a clinician confirms
    assert first.obx_14.value.startswith("20260501101500")  # the recording time
    device = fhir.device_id(response())
    assert all(r.obx_18.value.startswith(device) for r in rows)  # the model in OBX-18 on every value
    values = {r.obx_3.value.split("^")[0]: r.obx_5.value for r in rows}
    assert values["nips-equivalent-estimate"] == "4.5"
    assert values["level"].startswith("24484000^")
    assert values["model-versions"] == ";".join(f"{k}={v}" for k, v in sorted(VERSIONS.items()))


def test_without_a_recording_time_no_obx_claims_one_and_a_note_says_obr7_is_the_scoring_time():
    """FHIR labels its fallback effectiveDateTime with a note; HL7 put the scoring time in OBX-14, "recording
    time" by INTEGRATION.md, with nothing to tell it apart, so a flowsheet charted it as when the patient was
    observed."""
    message = hl7v2.parse(hl7v2.oru_r01(response(recorded_at=None), CTX))
    order = message.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_7.value.startswith("20260501101602")  # the scoring time: OBR-7 is required
    assert [r.obx_14.value for r in obx_rows(message)] == [""] * len(obx_rows(message))
    (note,) = [c for c in order.children if c.name == "NTE"]
    assert note.nte_3.value == hl7v2.escape(hl7v2.NO_RECORDING_TIME_NOTE)
    assert "OBR-7 is the time the gateway scored the clip" in hl7v2.NO_RECORDING_TIME_NOTE
    timed = hl7v2.parse(hl7v2.oru_r01(response(), CTX)).oru_r01_patient_result.oru_r01_order_observation
    assert not [c for c in timed.children if c.name == "NTE"]  # with a recording time: no note


def test_adult_final_and_no_subject():
    er7 = hl7v2.oru_r01(response(age_group="adult"), cfg=fhir.FhirConfig(status="final"))
    rows = obx_rows(hl7v2.parse(er7))
    assert {r.obx_11.value for r in rows} == {"F"}
    assert not [r for r in rows if "nips" in r.obx_3.value]
    assert "p-17" not in er7


def test_free_text_cannot_break_the_structure():
    cfg = fhir.FhirConfig(display="pain | estimate ^ with & delimiters ~")
    message = hl7v2.parse(hl7v2.oru_r01(response(), CTX, cfg))
    assert len(obx_rows(message)) == len(obx_rows(hl7v2.parse(hl7v2.oru_r01(response(), CTX))))
