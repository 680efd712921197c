"""Unit checks of the gateway's defences against hostile callers (no stack; the real-stack twins are in
tests/reliability/test_hostile_server.py and test_triton_watchdog.py)."""

from __future__ import annotations

import asyncio

import pytest
from urllib3 import encode_multipart_formdata

from avpenet.v1 import scoring_pb2
from preprocess_service import grpc_wire
from preprocess_service.errors import InvalidRequest, SlowUpload, reason_of
from preprocess_service.http_routes import read_body
from preprocess_service.multipart import parse_score_form
from preprocess_service.protocol import MediaPart, ScoreRequest, new_request_id
from preprocess_service.settings import Limits
from preprocess_service.watchdog import TritonWatchdog


@pytest.mark.parametrize("rid", ["abc\n", "abc\r\n", "a" * 65, "-x", "a b", ""])
def test_unsafe_request_ids_are_never_echoed(rid):
    assert new_request_id(rid) != rid


@pytest.mark.parametrize("rid", ["abc\n", "a" * 65, "x/y"])
def test_an_invalid_grpc_request_id_is_refused(rid):
    with pytest.raises(InvalidRequest, match="request_id"):
        ScoreRequest.from_proto(scoring_pb2.ScoreRequest(request_id=rid, age_group="adult"))


@pytest.mark.parametrize("value", [" adult", "adult ", "\tadult\r\n"])
def test_text_fields_are_stripped_the_same_way_for_both_protocols(value):
    from_http = ScoreRequest(audio=MediaPart(data=b"x"), age_group=value, subject_ref=" Patient/1 ")
    from_grpc = ScoreRequest.from_proto(
        scoring_pb2.ScoreRequest(
            age_group=value, subject_ref=" Patient/1 ", audio=scoring_pb2.MediaFile(data=b"x")
        )
    )
    for request in (from_http, from_grpc):
        assert (request.age_group, request.subject_ref) == ("adult", "Patient/1")
        request.validate_combination()
    assert ScoreRequest(age_group="  ").age_group == "unknown"


def _http_pins(text: str) -> dict[str, str]:
    """The pins of an HTTP upload whose `model_versions` form field is `text`."""
    body, ctype = encode_multipart_formdata({"audio": ("a.wav", b"x"), "model_versions": text})
    request = parse_score_form(body, ctype, "r")
    request.validate_combination()
    return request.model_versions


def _grpc_pins(pins: dict[str, str]) -> dict[str, str]:
    """The pins of a gRPC ScoreRequest whose `model_versions` map is `pins`."""
    message = scoring_pb2.ScoreRequest(audio=scoring_pb2.MediaFile(data=b"x"), model_versions=pins)
    request = ScoreRequest.from_proto(message)
    request.validate_combination()
    return request.model_versions


def test_pins_are_stripped_for_both_protocols():
    """HTTP's field was stripped, gRPC's map was not: `{" fusion ": " 2 "}` was a 422 over gRPC only."""
    assert _http_pins(" fusion = 2 ,avpenet=1\t") == {"fusion": "2", "avpenet": "1"}
    assert _grpc_pins({" fusion ": " 2 ", "avpenet": "1\t"}) == {"fusion": "2", "avpenet": "1"}


def test_a_name_pinned_twice_once_stripped_is_refused_for_both_protocols():
    with pytest.raises(InvalidRequest, match="name=version pairs"):
        _http_pins("fusion=1, fusion =2")
    with pytest.raises(InvalidRequest, match="name=version pairs"):
        _grpc_pins({"fusion": "1", " fusion ": "2"})


def test_pins_past_256_bytes_are_refused_for_both_protocols():
    """HTTP's field was capped at 256 bytes; gRPC took eight 64-character names (600 bytes)."""
    long = {f"{i}{'m' * 63}": "1" for i in range(4)}  # 4 x 66 bytes + 3 commas: 267
    text = ",".join(f"{name}={version}" for name, version in long.items())
    with pytest.raises(InvalidRequest, match="longer than 256 bytes"):
        _http_pins(text)
    with pytest.raises(InvalidRequest, match="longer than 256 bytes"):
        _grpc_pins(long)
    fits = dict(list(long.items())[:3])  # 200 bytes
    assert _http_pins(",".join(f"{n}={v}" for n, v in fits.items())) == _grpc_pins(fits) == fits


@pytest.mark.parametrize("version", ["²", "٢", "1234567890", "", "1.0"])
def test_a_version_is_one_to_nine_ascii_digits_for_both_protocols(version):
    """`str.isdigit` took "²" and "٢" as versions (then a 404 naming a version Triton cannot have)."""
    with pytest.raises(InvalidRequest, match="name=version pairs"):
        _http_pins(f"fusion={version}")
    with pytest.raises(InvalidRequest, match="name=version pairs"):
        _grpc_pins({"fusion": version})


def test_a_reference_with_a_trailing_newline_is_refused():
    with pytest.raises(InvalidRequest, match="subject_ref"):
        ScoreRequest(audio=MediaPart(data=b"x"), subject_ref="Patient/1\n\nx").validate_combination()


@pytest.mark.parametrize(
    "data", [b"\x12\xff\xff\xff\x0f", b"\x17abc", b'{"audio": "AAAA"}', b"\x2a\x02\xff\xfe"]
)
def test_malformed_protobuf_is_an_invalid_request(data):
    with pytest.raises(InvalidRequest, match="malformed avpenet.v1.ScoreRequest"):
        grpc_wire.parse(scoring_pb2.ScoreRequest, data)
    message = scoring_pb2.ScoreRequest(age_group="adult")
    assert grpc_wire.parse(scoring_pb2.ScoreRequest, message.SerializeToString()) == message
    assert grpc_wire.parse(scoring_pb2.ScoreRequest, message) is message


def test_refusal_reasons_are_bounded():
    assert reason_of(SlowUpload("x")) == "SlowUpload"
    assert reason_of(KeyError("anything")) == "InternalError"


class _Body:
    """A Starlette-like request whose body arrives as (delay, chunk) steps."""

    def __init__(self, steps: list[tuple[float, bytes]]) -> None:
        self.steps = steps
        self.headers: dict[str, str] = {}

    async def stream(self):
        for delay, chunk in self.steps:
            await asyncio.sleep(delay)
            yield chunk


def test_a_slow_body_is_ended_with_408_and_a_prompt_one_is_read():
    limits = Limits(upload_grace_s=0.3, min_upload_bytes_per_s=1000)
    slow = _Body([(0.0, b"x" * 100)] + [(0.2, b"x")] * 20)  # ~5 bytes/s
    with pytest.raises(SlowUpload, match="upload too slow"):
        asyncio.run(read_body(slow, limits))
    prompt = _Body([(0.01, b"y" * 500)] * 4)
    assert asyncio.run(read_body(prompt, limits)) == b"y" * 2000


def test_watchdog_trips_after_consecutive_failures_and_recovers_on_one_success():
    outcomes = iter([None, RuntimeError, RuntimeError, None])

    async def probe(timeout_s: float) -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome("probe failed")

    async def run() -> list[bool]:
        dog = TritonWatchdog(probe, period_s=1, timeout_s=1, failures=2)
        seen = []
        for _ in range(4):
            await dog.check_once()
            seen.append(dog.healthy)
        return seen

    assert asyncio.run(run()) == [True, True, False, True]


def test_watchdog_counts_a_hung_probe_as_a_failure():
    async def hang(timeout_s: float) -> None:
        await asyncio.sleep(3600)

    async def run() -> bool:
        dog = TritonWatchdog(hang, period_s=1, timeout_s=0.05, failures=1)
        await dog.check_once()
        return dog.healthy

    assert asyncio.run(run()) is False
