"""Unit tests of the FHIR R4 rendering: every field the integration needs, validated with fhir.resources."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from clinical_samples import CLIP_SHA, VERSIONS, response
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from preprocess_service import fhir
from preprocess_service.protocol import AgeRead

CTX = fhir.Context(subject_ref="Patient/p-17", encounter_ref="Encounter/e-3")


def codes(concept: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


def component(obs: dict, code: str) -> dict:
    found = [c for c in obs["component"] if c["code"]["coding"][0]["code"] == code]
    assert len(found) == 1, code
    return found[0]


class TestObservation:
    def test_validates_and_carries_every_field(self):
        text = fhir.render(response(), CTX)
        Observation.model_validate_json(text)  # raises if it is not valid FHIR
        obs = json.loads(text)
        cfg = fhir.DEFAULT_CONFIG
        assert obs["status"] == "preliminary"
        assert codes(obs["code"]) == {(cfg.code_system, cfg.code), ("http://snomed.info/sct", "406127006")}
        assert "72514-3" not in text  # the self-reported verbal rating code is gone
        assert obs["effectiveDateTime"] == "2026-05-01T10:15:00Z" and obs["issued"] == "2026-05-01T10:16:02Z"
        assert obs["subject"] == {"reference": "Patient/p-17"}
        assert obs["encounter"] == {"reference": "Encounter/e-3"}
        assert obs["meta"]["security"] == [fhir.AI_ASSERTED] and fhir.AI_ASSERTED["code"] == "AIAST"
        assert obs["identifier"][0]["value"] == "req-7f3a"
        assert obs["derivedFrom"][0]["identifier"]["value"] == CLIP_SHA
        assert obs["method"]["coding"][0]["system"] == cfg.code_system
        assert ("http://snomed.info/sct", "24484000") in codes(obs["interpretation"][0])  # severe
        assert obs["valueQuantity"]["value"] == 6.5 and obs["valueQuantity"]["code"] == "{score}"

    def test_device_names_the_model_and_every_part_version(self):
        obs = fhir.observation(response(), CTX)
        (device,) = obs["contained"]
        assert obs["device"] == {"reference": f"#{device['id']}"}
        assert {v["component"]["value"]: v["value"] for v in device["version"]} == VERSIONS
        assert device["id"] == fhir.device_id(response())  # stable for the same versions

    def test_components_interval_weights_and_neonatal_nips_estimate(self):
        obs = fhir.observation(response(age_group="neonate", score=6.5))
        interval = component(obs, "prediction-interval-90")["valueRange"]
        assert interval["low"]["value"] == 5.0 and interval["high"]["value"] == 7.7
        assert component(obs, "modality-weight-audio")["valueQuantity"]["value"] == 0.6
        nips = component(obs, "nips-equivalent-estimate")
        assert nips["valueQuantity"]["value"] == pytest.approx(4.5, abs=0.05)  # 6.5 x 7/10
        assert "ESTIMATE" in nips["code"]["text"] and "not a NIPS assessment" in nips["code"]["text"]
        adult = fhir.observation(response(age_group="adult"))
        assert not [c for c in adult["component"] if "nips" in c["code"]["coding"][0]["code"]]

    def test_missing_recording_time_falls_back_to_server_time_labelled(self):
        obs = fhir.observation(response(recorded_at=None))
        assert obs["effectiveDateTime"] == obs["issued"] == "2026-05-01T10:16:02Z"
        assert any("no recording time" in n["text"] for n in obs["note"])

    def test_deployment_binds_code_system_and_status(self):
        system = "https://fhir.example-hospital.org/CodeSystem/flowsheet"
        cfg = fhir.FhirConfig(code_system=system, code="R123", status="final")
        obs = fhir.observation(response(), CTX, cfg)
        assert obs["status"] == "final" and obs["code"]["coding"][0]["code"] == "R123"
        with pytest.raises(ValueError, match="status"):
            fhir.FhirConfig(status="done")

    def test_only_the_observations_own_code_is_in_the_deployments_code_system(self):
        """The product's sub-codes (components, method, level) were put in the hospital's CodeSystem (its
        flowsheet rows), claiming codes that do not exist there; they are in the product's own system."""
        cfg = fhir.FhirConfig(
            code_system="https://fhir.hospital.example/CodeSystem/flowsheet-rows", code="4711"
        )
        obs = fhir.observation(response(age_group="neonate"), CTX, cfg)
        unknown = response(age_group="unknown").model_copy(
            update={"age_read": AgeRead(group="adult", adult_probability=0.9)}
        )
        read = fhir.observation(unknown, CTX, cfg)  # with the age-read components
        concepts = [c["code"] for c in obs["component"] + read["component"]]
        concepts += [obs["method"], *obs["interpretation"], obs["code"]]
        in_system = {c["system"]: set() for concept in concepts for c in concept["coding"]}
        for concept in concepts:
            for c in concept["coding"]:
                in_system[c["system"]].add(c["code"])
        assert in_system[cfg.code_system] == {"4711"}
        product = in_system[fhir.PRODUCT_SYSTEM]
        assert {
            "prediction-interval-90",
            "modality-weight-audio",
            "probability-high",
            "age-group-read",
        } <= product
        assert {"adult-probability-read", "nips-equivalent-estimate", "avpenet-audio-visual-model"} <= product
        assert "level-high" in product and fhir.PRODUCT_SYSTEM == "urn:avpenet:fhir:CodeSystem:pain-estimate"


class TestBundle:
    def test_transaction_of_observation_device_provenance(self):
        text = fhir.render(response(), CTX, kind="bundle")
        Bundle.model_validate_json(text)
        bundle = json.loads(text)
        assert bundle["type"] == "transaction"
        by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
        assert set(by_type) == {"Observation", "Device", "Provenance"}
        obs, dev, prov = by_type["Observation"], by_type["Device"], by_type["Provenance"]
        assert obs["resource"]["device"]["reference"] == dev["fullUrl"]
        assert prov["resource"]["target"][0]["reference"] == obs["fullUrl"]
        assert prov["resource"]["agent"][0]["who"]["reference"] == dev["fullUrl"]
        assert prov["resource"]["entity"][0]["what"]["identifier"]["value"] == CLIP_SHA
        assert dev["request"]["ifNoneExist"].startswith("identifier=")  # one Device per model build
        # a retry scored again (another replica) files no second Observation, nor a second Provenance
        assert obs["request"]["ifNoneExist"] == "identifier=urn:avpenet:fhir:observation-id|req-7f3a"
        target = "target:Observation.identifier=urn:avpenet:fhir:observation-id|req-7f3a"
        assert prov["request"] == {"method": "POST", "url": "Provenance", "ifNoneExist": target}
        assert fhir.render(response(), CTX, kind="bundle") == text  # deterministic: replays are identical


def test_only_r4_elements_are_emitted():
    """R4 compatibility: every element sent exists in R4 (4.0.1), for each resource type emitted."""
    bundle = json.loads(fhir.render(response(), CTX, kind="bundle"))
    resources = [e["resource"] for e in bundle["entry"]] + [bundle]
    resources += fhir.observation(response(), CTX)["contained"]
    for res in resources:
        extra = set(res) - fhir.R4_ELEMENTS[res["resourceType"]]
        assert not extra, (res["resourceType"], extra)
    assert fhir.CONTENT_TYPE == "application/fhir+json; fhirVersion=4.0"


class TestRecordedAt:
    NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)

    def test_normalised_to_utc(self):
        assert fhir.parse_recorded_at("2026-05-01T11:15:00+01:00", self.NOW) == "2026-05-01T10:15:00Z"

    @pytest.mark.parametrize(
        ("value", "reason"),
        [("yesterday", "ISO 8601"), ("2026-05-01T10:15:00", "time zone"), ("2026-05-02T10:00:00Z", "future"),
         ("0001-01-01T00:00:00+01:00", "before 1970"), ("0099-01-01T00:00:00Z", "before 1970")],
    )  # fmt: skip
    def test_bad_values_name_the_reason(self, value, reason):
        with pytest.raises(ValueError, match=reason):
            fhir.parse_recorded_at(value, self.NOW)
