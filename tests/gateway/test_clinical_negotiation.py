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
    ],
)
def test_accept_negotiation(accept, kind, fmt):
    assert clinical.negotiate(accept, kind) == fmt


def test_unsupported_accept_and_kind_are_named():
    with pytest.raises(NotAcceptable, match="text/csv.*application/fhir\\+json"):
        clinical.negotiate("text/csv")
    with pytest.raises(NotAcceptable, match="observation or bundle"):
        clinical.negotiate("application/fhir+json", "document")
    with pytest.raises(InvalidRequest, match="format 9"):
        clinical.proto_format(9)
    assert clinical.proto_format(2) == "fhir-bundle"


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
