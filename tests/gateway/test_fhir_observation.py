"""The score as a FHIR R4 Observation, re-parsed with fhir.resources."""

from __future__ import annotations

import pytest
from support.responses import make_response

from avpenet import contract
from preprocess_service import fhir


class TestFhir:
    @pytest.mark.parametrize("kind", fhir.KINDS)
    def test_a_request_id_with_an_underscore_still_renders(self, kind):
        """Request ids may hold '_' (X-Request-ID, gRPC request_id) and FHIR ids may not: an Observation and a
        Bundle for one are valid, keep the request id as the identifier, and keep one id across retries."""
        import json

        from fhir.resources.R4B.observation import Observation

        resp, _ = make_response(3, request_id="ehr_visit.42")
        texts = [fhir.render(resp, kind=kind) for _ in range(2)]
        assert texts[0] == texts[1]  # a retry of the same request gives the same resource
        doc = json.loads(texts[0])
        entries = [doc] if kind == "observation" else [e["resource"] for e in doc["entry"]]
        again = Observation.model_validate(next(r for r in entries if r["resourceType"] == "Observation"))
        assert again.identifier[0].value == "ehr_visit.42"
        assert "_" not in (again.id or "")  # a Bundle's Observation has no id, its fullUrl is a urn:uuid
        assert fhir.resource_id("ehr-visit.42") == "ehr-visit.42"  # a valid FHIR id is used as it is

    def test_observation_validates_and_says_model_estimate(self):
        from fhir.resources.R4B.observation import Observation

        resp, _ = make_response(3)
        text = fhir.render(resp, fhir.Context(subject_ref="Patient/p1", encounter_ref="Encounter/e1"))
        again = Observation.model_validate_json(text)  # re-parse what we send
        assert again.code.coding[0].system == fhir.DEFAULT_CONFIG.code_system  # a local code, not LOINC
        assert float(again.valueQuantity.value) == pytest.approx(round(resp.score, 2))
        assert again.interpretation[0].coding[1].code == f"level-{resp.level}"
        assert "model" in again.method.text.lower() and again.device.reference.startswith("#avpenet-")
        assert again.subject.reference == "Patient/p1" and again.encounter.reference == "Encounter/e1"
        assert again.status == "preliminary"


@pytest.mark.parametrize(("score", "level"), [(3.004, "low"), (3.006, "moderate"), (6.003, "moderate")])
def test_the_documents_level_is_that_of_the_score_they_show(score, level):
    """3.004 was shown as 3.00 and labelled moderate (Moderate in FHIR, 6736007 in HL7) beside 'low 0-3'."""
    import json

    from preprocess_service import hl7v2

    resp, _ = make_response(3)
    resp = resp.model_copy(
        update={"score": score, "level": contract.level_of(score)}
    )  # as the gateway sets it
    obs = json.loads(fhir.render(resp))
    assert obs["interpretation"][0]["coding"][1]["code"] == f"level-{level}"
    snomed = fhir.LEVEL_SNOMED[level][0]
    assert "|CWE|level^pain level^" in hl7v2.oru_r01(resp) and f"|{snomed}^" in hl7v2.oru_r01(resp)


def test_an_estimate_without_an_age_group_says_what_that_costs():
    import json

    from preprocess_service import hl7v2
    from preprocess_service.protocol import AgeRead

    resp, _ = make_response(3)
    older = resp.model_copy(update={"age_group": "unknown"})  # a fusion before 16 reports no age read
    read = older.model_copy(update={"age_read": AgeRead(group="adult", adult_probability=0.9731)})

    def notes(r) -> list[str]:
        return [n["text"] for n in json.loads(fhir.render(r))["note"]]

    assert fhir.UNKNOWN_AGE_NOTE.format(read="") in notes(older)
    assert not any("No age group" in n for n in notes(resp))
    read_note = fhir.UNKNOWN_AGE_NOTE.format(read=" as adult (P(adult) 0.97)")
    assert read_note in notes(read) and read_note.startswith("No age group was sent: the model read it from")
    components = {c["code"]["coding"][0]["code"]: c for c in json.loads(fhir.render(read))["component"]}
    assert components["age-group-read"]["valueString"] == "adult"
    assert components["adult-probability-read"]["valueQuantity"]["value"] == 0.9731
    assert "age-group-read" not in {
        c["code"]["coding"][0]["code"] for c in json.loads(fhir.render(older))["component"]
    }
    message = hl7v2.oru_r01(read)
    assert "|ST|age-group-read^age group read from the clip^" in message and "|adult|" in message
    assert "|NM|adult-probability-read^" in message and "|0.9731|" in message
    assert "age-group-read" not in hl7v2.oru_r01(older)


def test_a_named_age_group_the_clip_contradicts_is_questioned_in_every_document():
    """A clip named neonate that surely reads as an adult: FHIR's note and components and HL7's rows say so,
    so a chart reader sees the age group to check, not only an API client."""
    import json

    from preprocess_service import hl7v2
    from preprocess_service.protocol import AgeRead

    resp, _ = make_response(3)  # named neonate
    read = AgeRead.of(0.991, "neonate")
    assert read.contradicts_age_group and read.group == "adult"
    questioned = resp.model_copy(update={"age_read": read})
    document = json.loads(fhir.render(questioned))
    notes = [n["text"] for n in document["note"]]
    assert fhir.contradicted_age_note(questioned) in notes
    assert "reads as adult (P(adult) 0.99), not as the neonate" in fhir.contradicted_age_note(questioned)
    assert "NIPS-equivalent" in fhir.contradicted_age_note(questioned)  # a neonate's scale was reported
    assert not any("No age group" in n for n in notes)
    components = {c["code"]["coding"][0]["code"]: c for c in document["component"]}
    assert components["age-group-read"]["valueString"] == "adult"
    assert "contradicts the age group sent" in components["age-group-read"]["code"]["text"]
    assert not any("Check the age group" in n["text"] for n in json.loads(fhir.render(resp))["note"])
    message = hl7v2.oru_r01(questioned)
    assert "|ST|age-group-contradicted^" in message and "|neonate sent, adult read|" in message
    assert "age-group-contradicted" not in hl7v2.oru_r01(resp)
