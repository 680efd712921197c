"""The bad-input corpus against the real stack (Ray Serve + Triton, loopback), over HTTP and gRPC.

One pass sends every case over both protocols (module fixture), then each test checks one promise: the
documented status per case within a bounded time, a healthy and ready gateway afterwards, replica memory
back near its baseline, no file written holding media, and no media bytes or patient references in any
log while request ids are there.

The session stack keeps its temp files in a private folder (`stack_tmpdir`, TMPDIR of every process that
receives uploads), so no other process on the machine can add to what is checked there, and everything the
corpus leaves in it counts. The places it shares (the machine's temp dir, the processes' working dirs,
Ray's folder) are checked for this corpus's own bytes, which no other process writes.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

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
    stamps,
    written,
)
from support.gateway import API_KEY
from support.processes import descendants, rss_mb, serve_replicas

from preprocess_service.settings import Limits

pytestmark = pytest.mark.integration

CASE_BOUND_S = 20.0  # the slowest case (face tracking of two faces) takes ~6 s on a busy 2-core box
MEMORY_SLACK_MB = 150.0  # a decoded bomb would hold hundreds of MB; allocator noise is tens
LIMITS = Limits(max_upload_bytes=4 * 1024 * 1024, max_duration_s=20, max_in_flight=8)  # = the fixture's
CASES = corpus.build(LIMITS)
RID_PREFIX = "corpus-"
# The processes an upload reaches: Serve's proxy and replicas, Triton's Python-backend stubs and tritonserver
# (most specific first: a stub's command line may name the server's folder).
RECEIVERS = ("ProxyActor", "ServeReplica", "triton_python_backend_stub", "tritonserver")
ORT_SESSION_FILE = ".ses"  # onnxruntime's session-id file in TMPDIR, written as Triton loads a model
SOURCES = (".py", ".md")  # the corpus's own code and docs name MARKER; people edit them while this runs
SCAN_MAX = 64 << 20  # an upload is at most 4 MiB: bigger files in shared places are someone else's


def fingerprints(cases: list[corpus.Case]) -> list[bytes]:
    """A 48-byte run of each uploaded file, varied enough (32+ distinct byte values: encoded payload, not a
    muxer's header or padding) to be found only where that file's bytes were copied. Looked for from the
    middle on; a file with no such run leaves none (MARKER and its name still mark it)."""
    found = set()
    for case in cases:
        for _, _, data in case.upload.files:
            starts = [*range(len(data) // 2, len(data) - 48, 16), *range(0, len(data) // 2 - 48, 16)]
            run = next((data[a : a + 48] for a in starts if len(set(data[a : a + 48])) >= 32), None)
            if run is not None:
                found.add(run)
    return sorted(found)


def readable(hits: dict[str, list[str]]) -> dict[str, list[str]]:
    """`find_in_files` hits with each fingerprint named, not printed as 48 raw bytes."""
    return {k if k.isprintable() else "(a run of an uploaded file)": v for k, v in hits.items()}


def kind_of(title: str) -> str:
    return next(kind for kind in RECEIVERS if kind in title)


def watched(stack, private: Path, cwds: set[str]) -> dict[str, dict]:
    """Stamps of every place the stack's processes can write to: their private TMPDIR, Ray's folder, the
    machine's temp dir (3 levels, as a hard-coded /tmp path would land) and their working dirs."""
    ray_dir = Path(stack.ray_node.temp_dir)
    places = {"private": stamps(private, depth=64), "ray": stamps(ray_dir, depth=64)}
    places["machine"] = stamps(tempfile.gettempdir(), depth=3, skip=[ray_dir, private])
    for cwd in sorted(cwds):
        places[f"cwd {cwd}"] = stamps(cwd, depth=8, skip=[ray_dir, private])
    return places


@pytest.fixture(scope="module")
def corpus_run(gateway_stack, stack_tmpdir):
    assert Limits.model_validate(gateway_stack.args["limits"]) == LIMITS, "corpus sized for other limits"
    ray_dir = gateway_stack.ray_node.temp_dir
    http_url = gateway_stack.http_url
    channel = grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS)
    warm = next(c for c in CASES if c.name == "two_faces")  # loads the face model in the extractor
    body, ctype = corpus.http_request(warm)
    assert http_post(http_url, body, ctype, key=API_KEY).status == 200
    gc.collect()
    replicas = serve_replicas()
    assert replicas, "no Serve replica processes found"
    before_mb = rss_mb(replicas)
    receivers = descendants(*RECEIVERS)
    cwds = {proc.cwd() for proc, _ in receivers}
    before_files = watched(gateway_stack, stack_tmpdir, cwds)

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
    after_files = watched(gateway_stack, stack_tmpdir, cwds)
    yield {
        "answers": answers,
        "before_mb": before_mb,
        "after_mb": rss_mb(serve_replicas()),
        "tmpdirs": [(kind_of(title), proc.environ().get("TMPDIR")) for proc, title in receivers],
        "private": stack_tmpdir,
        "files": {place: (before_files[place], after_files[place]) for place in after_files},
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


def test_every_process_an_upload_reaches_keeps_its_temp_files_in_the_private_folder(corpus_run):
    tmpdirs = corpus_run["tmpdirs"]
    assert {kind for kind, _ in tmpdirs} == set(RECEIVERS), tmpdirs  # each kind found, so each is checked
    assert {tmpdir for _, tmpdir in tmpdirs} == {str(corpus_run["private"])}, tmpdirs


def test_no_temp_files_left_holding_media(corpus_run):
    needles = [corpus.MARKER, *fingerprints(CASES)]
    private = corpus_run["private"]
    held = [p for p in private.rglob("*") if p.is_file()]  # whenever written: the folder is the stack's alone
    hits = readable(find_in_files(held, [*needles, b"ftypisom", b"RIFF"]))
    assert not hits, f"the stack's temp files hold upload bytes: {hits}"
    before, after = corpus_run["files"]["private"]
    new = [p for p in written(before, after) if p.name != ORT_SESSION_FILE]
    assert not new, f"the corpus made temp files (a spooled upload?): {new}"
    for place, (before, after) in corpus_run["files"].items():
        paths = [p for p in written(before, after) if p.suffix not in SOURCES and after[p][1] < SCAN_MAX]
        named = [p for p in paths if corpus.MARKER.decode() in p.name]
        assert not named, f"{place}: files named after an upload: {named}"
        hits = readable(find_in_files(paths, needles))
        assert not hits, f"{place}: files written during the corpus hold upload bytes: {hits}"


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
