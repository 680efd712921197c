"""The bad-input corpus against the real stack (Ray Serve + Triton, loopback), over HTTP and gRPC.

One pass sends every case over both protocols (module fixture), then each test checks one promise: the
documented status per case within a bounded time, a healthy and ready gateway afterwards, replica memory
back near its baseline, no temp files left holding media, and no media bytes or patient references in any
log while request ids are there.
"""

from __future__ import annotations

import gc
import time

import corpus
import grpc
import pytest
import requests
from corpus.harness import (
    GRPC_OPTIONS,
    Answer,
    find_in_files,
    grpc_call,
    http_post,
    log_files,
    rss_mb,
    serve_replicas,
    temp_listing,
)
from support.gateway import API_KEY

from preprocess_service.settings import Limits

pytestmark = pytest.mark.integration

CASE_BOUND_S = 20.0  # the slowest case (face tracking of two faces) takes ~6 s on a busy 2-core box
MEMORY_SLACK_MB = 150.0  # a decoded bomb would hold hundreds of MB; allocator noise is tens
LIMITS = Limits(max_upload_bytes=4 * 1024 * 1024, max_duration_s=20, max_in_flight=8)  # = the fixture's
CASES = corpus.build(LIMITS)
RID_PREFIX = "corpus-"


@pytest.fixture(scope="module")
def corpus_run(gateway_stack):
    assert Limits.model_validate(gateway_stack.args["limits"]) == LIMITS, "corpus sized for other limits"
    ray_dir = gateway_stack._ray_dir
    http_url = gateway_stack.http_url
    channel = grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS)
    warm = next(c for c in CASES if c.name == "two_faces")  # loads the face model in the extractor
    body, ctype = corpus.http_request(warm)
    assert http_post(http_url, body, ctype, key=API_KEY).status == 200
    gc.collect()
    replicas = serve_replicas()
    assert replicas, "no Serve replica processes found"
    before_mb = rss_mb(replicas)
    before_tmp = temp_listing(skip=[ray_dir])

    answers: dict[tuple[str, str], Answer] = {}
    for case in CASES:
        body, ctype = corpus.http_request(case)
        answers[case.name, "http"] = http_post(
            http_url, body, ctype, key=API_KEY, headers={"X-Request-ID": RID_PREFIX + case.name}
        )
        answers[case.name, "grpc"] = grpc_call(
            channel, corpus.grpc_message(case), key=API_KEY,
            metadata=[("x-request-id", RID_PREFIX + "grpc-" + case.name)],
        )  # fmt: skip
    channel.close()
    time.sleep(2.0)  # replicas flush their log handlers
    yield {
        "answers": answers,
        "before_mb": before_mb,
        "after_mb": rss_mb(serve_replicas()),
        "before_tmp": before_tmp,
        "after_tmp": temp_listing(skip=[ray_dir]),
        "logs": log_files(ray_dir),
        "triton_log": gateway_stack.triton.log_tail(),
    }


def test_corpus_has_the_required_breadth():
    assert len(CASES) >= 25
    statuses = {c.http_status for c in CASES}
    assert {200, 413, 415, 422} <= statuses
    assert {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"} <= {c.grpc_code for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_gets_its_documented_status(corpus_run, case):
    http = corpus_run["answers"][case.name, "http"]
    rpc = corpus_run["answers"][case.name, "grpc"]
    assert http.status == case.http_status, f"HTTP: {http.detail[:300]}"
    assert rpc.status == case.grpc_code, f"gRPC: {rpc.detail[:300]}"
    assert http.seconds < CASE_BOUND_S and rpc.seconds < CASE_BOUND_S
    if http.status != 200:
        assert http.headers["x-request-id"] == RID_PREFIX + case.name  # errors carry the request id
        assert corpus.MARKER.decode() not in http.detail  # nothing of the upload is echoed back
    assert corpus.MARKER.decode() not in rpc.detail


def test_gateway_healthy_and_scoring_after_corpus(corpus_run, gateway_stack):
    url = gateway_stack.http_url
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
    valid = CASES[0]
    body, ctype = corpus.http_request(valid)
    assert http_post(url, body, ctype, key=API_KEY).status == 200


def test_replica_memory_returns_near_baseline(corpus_run):
    grown = corpus_run["after_mb"] - corpus_run["before_mb"]
    assert grown < MEMORY_SLACK_MB, f"{corpus_run['before_mb']:.0f} -> {corpus_run['after_mb']:.0f} MB"


def test_no_temp_files_left_holding_media(corpus_run):
    new = sorted(corpus_run["after_tmp"] - corpus_run["before_tmp"])
    files = [p for p in new if p.is_file()]
    hits = find_in_files(files, [corpus.MARKER, b"ftypisom", b"RIFF"])
    assert not hits, f"temp files with upload bytes: {hits}"
    spooled = [p for p in files if p.name.startswith(("tmp", "multipart"))]
    assert not spooled, f"new temp files during the corpus: {spooled}"


def test_no_media_bytes_or_patient_refs_in_logs(corpus_run):
    logs = corpus_run["logs"]
    assert logs, "no Ray/Serve log files found"
    needles = [
        corpus.MARKER,
        corpus.MARKER.hex().encode(),
        corpus.SUBJECT_MARKER.encode(),
        corpus.cases.PHI_TEXT.encode(),
    ]
    hits = find_in_files(logs, needles)
    assert not hits, f"PHI or media in logs: {hits}"
    triton = corpus_run["triton_log"]
    assert all(n.decode() not in triton for n in needles)
    # The logs are the right ones: request ids (and only ids and digests) are there.
    ids = find_in_files(logs, [f"{RID_PREFIX}valid_audio_landmarks".encode()])
    assert ids, "request ids missing from the replica logs: the grep looked at the wrong files"


def test_every_case_is_documented_with_its_statuses():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md").read_text()
    for case in CASES:
        assert f"| `{case.name}` | {case.what} | {case.http_status} | {case.grpc_code} |" in doc, case.name
