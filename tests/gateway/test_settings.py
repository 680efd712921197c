"""Gateway settings: environment over config args, unknown keys, keys required when exposed."""

from __future__ import annotations

import pytest

from preprocess_service.settings import GatewaySettings, is_loopback


class TestSettings:
    def test_env_overrides_config_args(self):
        s = GatewaySettings.load(
            {"triton_url": "a:1", "limits": {"max_in_flight": 3}},
            {"AVPENET_TRITON_URL": "b:2", "AVPENET_MAX_UPLOAD_BYTES": "10", "AVPENET_API_KEYS": "k1, k2"},
        )
        assert s.triton_url == "b:2" and s.limits.max_upload_bytes == 10 and s.limits.max_in_flight == 3
        assert s.api_keys == ("k1", "k2")

    def test_unknown_keys_fail(self):
        with pytest.raises(ValueError):
            GatewaySettings.load({"tritonurl": "x"}, {})

    def test_keys_required_when_exposed(self):
        from preprocess_service.service import ScoringService

        assert not GatewaySettings.load({"grpc_enabled": False}, {}).auth_required
        assert GatewaySettings.load({"grpc_enabled": False, "bind_host": "0.0.0.0"}, {}).auth_required
        assert GatewaySettings.load({}, {}).auth_required  # Ray's gRPC proxy binds all interfaces
        with pytest.raises(ValueError, match="API keys are required"):
            ScoringService(GatewaySettings.load({"bind_host": "10.0.0.5"}, {}))
        assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
        assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("hl7_sending_facility", "ST MARYS NEONATAL ICU NORTH", "at most 20"),
        ("hl7_assigning_authority", "A&B&C&D&E&F&G&", "once HL7-escaped"),  # 14 characters, 26 escaped
        ("hl7_receiving_facility", "HÔPITAL", "printable ASCII"),
        ("hl7_receiving_application", "A\x0bB", "printable ASCII"),  # an MLLP start byte inside MSH
        ("fhir_code", "pain^score", "should match pattern"),  # would split OBX-3 into code and text
        ("fhir_code", "pain  score", "should match pattern"),  # not a FHIR code
        ("fhir_code_system", "urn:x:pain estimate", "should match pattern"),
        ("fhir_code_system", "", "should match pattern"),
    ],
)
def test_clinical_names_every_answer_would_fail_on_are_refused_at_load(field, value, reason):
    """Before, these loaded and then failed every HL7 (or FHIR) answer with a 500, after scoring."""
    with pytest.raises(ValueError, match=reason):
        GatewaySettings.load({field: value}, {})
    assert GatewaySettings.load({field: "A&B" if field.startswith("hl7") else "x"}, {})  # short ones load
