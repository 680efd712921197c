"""Unit tests of format negotiation, version-pin checks and the request identity used for idempotency."""

from __future__ import annotations

import pytest

from preprocess_service import clinical, pinning
from preprocess_service.errors import InvalidRequest, NotAcceptable, NotFound
from preprocess_service.protocol import MediaPart, ScoreRequest


@pytest.mark.parametrize(
    ("accept", "kind", "fmt"),
    [
        (None, None, "json"),
        ("*/*", None, "json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", None, "json"),  # a browser
        ("application/fhir+json", None, "fhir-observation"),
        ("application/fhir+json; fhirVersion=4.0", "bundle", "fhir-bundle"),
        ("application/json;q=0.5, x-application/hl7-v2+er7", None, "hl7v2"),  # q-values decide
        ("x-application/hl7-v2+er7;q=0, application/json", None, "json"),  # q=0 means "not this"
        ("application/json", "bundle", "json"),  # a valid ?fhir= is ignored when the answer is not FHIR
        ("application/fhir+json; fhirVersion=4.0.1", None, "fhir-observation"),
        ("application/fhir+json; fhirVersion=5.0, application/json;q=0.5", None, "json"),  # R5 not served
    ],
)
def test_accept_negotiation(accept, kind, fmt):
    assert clinical.negotiate(accept, kind) == fmt


def test_unsupported_accept_and_kind_are_named():
    with pytest.raises(NotAcceptable, match="text/csv.*application/fhir\\+json"):
        clinical.negotiate("text/csv")
    with pytest.raises(InvalidRequest, match="fhir must be observation or bundle .*not 'document'"):
        clinical.negotiate("application/fhir+json", "document")
    with pytest.raises(InvalidRequest, match="format 9"):
        clinical.proto_format(9)
    assert clinical.proto_format(2) == "fhir-bundle"


@pytest.mark.parametrize(
    "accept",
    ["application/json;q=0", "*/*;q=0", "application/fhir+json;q=0, x-application/hl7-v2+er7;q=0",
     "application/json;q=abc", "application/fhir+json; fhirVersion=5.0;q=0"],
)  # fmt: skip
def test_an_accept_that_refuses_every_type_is_406_not_json(accept):
    """Every range the client named at q=0 ("not this type"): it was answered JSON, as if it had sent none."""
    with pytest.raises(NotAcceptable, match="accepts no type \\(q=0\\); ask for application/json") as caught:
        clinical.negotiate(accept)
    assert caught.value.http_status == 406


@pytest.mark.parametrize(
    "accept", ["application/json", None, "x-application/hl7-v2+er7", "application/fhir+json"]
)
def test_a_bad_fhir_kind_is_422_naming_the_values_whatever_the_format(accept):
    """It was 406 ("fhir must be observation or bundle") though the client asked for JSON: a bad field value
    is 422 everywhere else. It is checked whatever the format, so a typo is never silently ignored."""
    with pytest.raises(InvalidRequest, match="fhir must be observation or bundle .*not 'Bundle'") as caught:
        clinical.negotiate(accept, "Bundle")
    assert caught.value.http_status == 422


@pytest.mark.parametrize(
    "accept", ["application/fhir+json; fhirVersion=5.0", "application/fhir+json;fhirversion=3.0"]
)
def test_a_fhir_version_other_than_r4_is_406_naming_4_0(accept):
    """The gateway answered R4 to a client that asked for R5: FHIR's rule is 406 for a version not served."""
    with pytest.raises(NotAcceptable, match="FHIR R4 only.*fhirVersion=4.0") as caught:
        clinical.negotiate(accept, "bundle")
    assert caught.value.http_status == 406


def test_pins_name_the_model_and_version():
    ready = pinning.served(
        [
            {"name": "avpenet", "version": "1", "state": "READY"},
            {"name": "fusion", "version": "1", "state": "UNAVAILABLE"},
            {"name": "fusion", "version": "2", "state": "READY"},
        ]
    )
    assert pinning.in_use(ready) == {"avpenet": "1", "fusion": "2"}
    pinning.check({"avpenet": "1", "fusion": "2"}, ready, set(ready))
    with pytest.raises(NotFound, match="fusion version 1 is not served \\(serving version 2\\)"):
        pinning.check({"fusion": "1"}, ready, set(ready))
    with pytest.raises(NotFound, match="no model named 'fusoin'"):
        pinning.check({"fusoin": "2"}, ready, set(ready))
    assert pinning.parse(" avpenet=1 , fusion=2 ") == {"avpenet": "1", "fusion": "2"}
    with pytest.raises(InvalidRequest, match="name=version"):
        pinning.parse("fusion")


def test_request_identity_is_the_clip_and_fields_not_the_request_id():
    def request(data: bytes, **fields) -> ScoreRequest:
        return ScoreRequest(audio=MediaPart(data=data, filename="x.wav"), **fields)

    a, b = request(b"one", request_id="r1"), request(b"one", request_id="r2", age_group="unknown")
    assert clinical.clip_sha256(a) == clinical.clip_sha256(b) and len(clinical.clip_sha256(a)) == 64
    assert clinical.fingerprint(a, clinical.clip_sha256(a)) == clinical.fingerprint(
        b, clinical.clip_sha256(b)
    )
    c = request(b"one", subject_ref="Patient/2")
    assert clinical.fingerprint(c, clinical.clip_sha256(c)) != clinical.fingerprint(
        a, clinical.clip_sha256(a)
    )
    assert clinical.clip_sha256(request(b"two")) != clinical.clip_sha256(a)
