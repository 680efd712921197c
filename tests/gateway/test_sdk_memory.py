"""The SDK holds an HTTP upload once: a 600-s video may be hundreds of MB and a client on a small VM should
not need twice that. Peaks are Python allocations (tracemalloc), deterministic for a given size."""

from __future__ import annotations

import tracemalloc

import pytest
import requests
from clinical_samples import response
from support.fake_gateway import FakeGateway as Gateway

from preprocess_service.client import request_for
from preprocess_service.multipart import parse_score_form
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client, ScoreError
from preprocess_service.sdk_form import multipart_form, redirect_refusal

SIZE = 32 << 20


@pytest.fixture
def request_() -> ScoreRequest:
    return ScoreRequest(
        audio=MediaPart(data=b"RIFF" + bytes(5000), filename="söund a.wav", content_type="audio/wav"),
        landmarks=MediaPart(data=b"PK\x03\x04" + bytes(300), filename="f.npz"),
        age_group="adult",
        subject_ref="Patient/1",
        encounter_ref="Encounter/7",
        recorded_at="2024-05-01T10:00:00+02:00",
        model_versions={"fusion": "2"},
        deliver_hl7=True,
    )


def test_an_http_upload_of_a_file_is_held_once(tmp_path):
    """It peaked at 2.1x the file: read, then copied whole into the multipart body requests renders."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(bytes(SIZE))
    gateway = Gateway([(200, response().model_dump_json())])
    tracemalloc.start()
    try:
        result = Client(gateway.url, retries=0).score(request_for([path], "adult"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gateway.close()
    assert result.score.score == response().score and int(gateway.seen[0]["content-length"]) > SIZE
    assert peak < 1.5 * SIZE, f"peak {peak / SIZE:.2f}x the file"


def test_the_streamed_body_is_the_form_the_gateway_reads(request_):
    body = multipart_form(request_)
    whole = body.read()
    assert len(whole) == body.len and body.read() == b""
    parsed = parse_score_form(whole, body.content_type, request_.request_id)
    assert parsed.model_dump() == request_.model_dump()
    files = {n: (p.filename, p.data, p.content_type or None) for n, p in request_.parts().items()}
    fields = {"age_group": "adult", "subject_ref": "Patient/1", "encounter_ref": "Encounter/7"}
    fields |= {"recorded_at": request_.recorded_at, "model_versions": "fusion=2", "deliver": "hl7v2"}
    theirs = requests.Request("POST", "http://x/", files=files, data=fields).prepare()  # as the SDK sent it
    boundary = theirs.headers["Content-Type"].split("boundary=")[1].encode()
    assert theirs.body.replace(boundary, body.boundary_value.encode()) == whole
    again = multipart_form(request_, body.boundary_value)  # a resend after a 307/308
    assert b"".join(iter(lambda: again.read(777), b"")) == whole and again.content_type == body.content_type


def test_a_redirected_upload_is_sent_whole_again(request_):
    """A proxy's 307/308 (http -> https) is followed with the body: requests resent the spent encoder, so the
    gateway got a Content-Length and no bytes, and the SDK waited out its timeout."""
    gateway = Gateway([(307, "", {"location": "/v1/score?again=1"}), (200, response().model_dump_json())])
    try:
        result = Client(gateway.url, retries=0, timeout_s=5).score(request_)
    finally:
        gateway.close()
    assert result.score.score == response().score
    assert [seen["content-length"] for seen in gateway.seen] == [str(n) for n in gateway.read]


def test_a_redirect_to_another_host_is_refused_with_nothing_sent_there(request_):
    """A 307/308 elsewhere had the recording resent to that host (requests dropped only the API key)."""
    other = Gateway([(200, response().model_dump_json())])
    port = other.url.rsplit(":", 1)[1]
    gateway = Gateway([(307, "", {"location": f"http://localhost:{port}/v1/score"})])
    try:
        with pytest.raises(ScoreError) as refused:
            Client(gateway.url, api_key="k", retries=0, timeout_s=5).score(request_)
    finally:
        gateway.close()
        other.close()
    assert refused.value.status == "REDIRECT_REFUSED" and other.read == [] and other.seen == []
    assert (
        f"http://localhost:{port}/v1/score" in refused.value.detail and "another host" in refused.value.detail
    )


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        ("http://gw:8080/v1/score", "http://gw:8080/v1/score?again=1", ""),
        ("https://gw/v1/score", "https://GW:443/v2/score", ""),
        ("http://gw/v1/score", "https://gw/v1/score", ""),  # an ingress's upgrade to TLS, same host
        ("http://gw:80/v1/score", "https://gw:443/v1/score", ""),
        ("https://gw/v1/score", "http://gw/v1/score", "leaves TLS"),
        ("http://gw:8080/v1/score", "https://gw:8443/v1/score", "port 8443"),
        ("http://gw/v1/score", "http://gw:8080/v1/score", "another port"),
        ("https://gw/v1/score", "https://evil.example/v1/score", "another host"),
        ("http://gw/v1/score", "ftp://gw/v1/score", "ftp scheme"),
    ],
)
def test_the_body_follows_a_redirect_only_to_the_same_origin_or_up_to_tls(source, target, why):
    refusal = redirect_refusal(source, target)
    assert why in refusal if why else refusal == ""
