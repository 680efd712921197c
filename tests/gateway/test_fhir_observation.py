"""The score as a FHIR R4 Observation, re-parsed with fhir.resources."""

from __future__ import annotations

import pytest
from support.responses import make_response

from preprocess_service import fhir


class TestFhir:
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
