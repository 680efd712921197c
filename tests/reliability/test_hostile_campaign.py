"""A campaign of hostile requests (the bad-input corpus, round robin over both protocols) against the session
stack: afterwards a control clip scores exactly as before, and every process's memory is back near its warm
figure (within 20%, plus 16 MB of allocator slack for the small ones).

The quick version in `make test` sends CAMPAIGN_REQUESTS (60); `make reliability` sends 600
(AVPENET_CAMPAIGN_REQUESTS). "Warm" is measured after one full pass of the corpus, because the first decode of
each container format, the face model and Triton's batch buffers allocate once and keep their memory.
"""

from __future__ import annotations

import gc
import json
import os
import time

import corpus
import grpc
import psutil
import pytest
from corpus.harness import GRPC_OPTIONS, grpc_call, http_post
from corpus.wire import CTYPE, valid_clip
from support.gateway import API_KEY
from support.processes import descendants, rss_mb

from preprocess_service.settings import Limits

pytestmark = pytest.mark.integration

CAMPAIGN_REQUESTS = int(os.environ.get("AVPENET_CAMPAIGN_REQUESTS", "60"))
GROWTH = 0.20  # allowed RSS growth over the warm figure, per process
SLACK_MB = 16.0
LIMITS = Limits(max_upload_bytes=4 * 1024 * 1024, max_duration_s=20, max_in_flight=8)  # = the fixture's
CASES = [c for c in corpus.build(LIMITS) if c.http_status != 200]  # hostile ones only
STACK_TITLES = ("ServeReplica:avpenet:Gateway", "ServeReplica:avpenet:FeatureExtractor", "ProxyActor")


def stack_processes(triton_pid: int) -> dict[str, psutil.Process]:
    """name -> process for the Serve replicas, the proxy, tritonserver and its stubs."""
    out: dict[str, psutil.Process] = {}
    for proc, title in descendants(*STACK_TITLES):
        kind = next(k for k in STACK_TITLES if k in title)
        out[f"{kind.rsplit(':', 1)[-1]}-{proc.pid}"] = proc
    triton = psutil.Process(triton_pid)
    out[f"tritonserver-{triton_pid}"] = triton
    for stub in triton.children():
        out[f"stub-{stub.pid}"] = stub
    return out


def rss_by_name(procs: dict[str, psutil.Process]) -> dict[str, float]:
    """MiB per process; one that ended (a crash the campaign caused) fails the test."""
    ended = sorted(name for name, proc in procs.items() if not proc.is_running())
    assert not ended, f"processes ended during the campaign: {ended}"
    return {name: rss_mb([proc]) for name, proc in procs.items()}


def send(case, protocol: str, stack, channel) -> str | int:
    if protocol == "http":
        body, ctype = corpus.http_request(case)
        return http_post(stack.http_url, body, ctype, key=API_KEY, timeout=60).status
    return grpc_call(channel, corpus.grpc_message(case), key=API_KEY, timeout=60).status


def control_score(stack) -> float:
    answer = http_post(stack.http_url, valid_clip()[0], CTYPE, key=API_KEY)
    assert answer.status == 200, answer.detail[:300]
    return float(json.loads(answer.detail)["score"])


def test_hostile_campaign_leaves_scores_and_memory_as_they_were(gateway_stack, triton_server):
    assert Limits.model_validate(gateway_stack.args["limits"]) == LIMITS, "corpus sized for other limits"
    channel = grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS)
    try:
        for case in CASES:  # warm-up pass: every decoder and buffer has been used once
            for protocol in ("http", "grpc"):
                send(case, protocol, gateway_stack, channel)
        score = control_score(gateway_stack)
        gc.collect()
        procs = stack_processes(triton_server.pid)
        warm = rss_by_name(procs)

        start = time.monotonic()
        unexpected = []
        for i in range(CAMPAIGN_REQUESTS):
            case = CASES[i % len(CASES)]
            protocol = ("http", "grpc")[(i // len(CASES)) % 2 ^ (i % 2)]
            status = send(case, protocol, gateway_stack, channel)
            if status not in (case.http_status, case.grpc_code):
                unexpected.append((case.name, protocol, status))
        took = time.monotonic() - start
    finally:
        channel.close()
    time.sleep(3.0)  # replicas finish their worker threads and free their buffers
    after = rss_by_name(procs)
    assert not unexpected, unexpected
    assert abs(control_score(gateway_stack) - score) < 1e-4, "the control clip scores differently"
    grown = {n: (warm[n], after[n]) for n in warm if after[n] > warm[n] * (1 + GROWTH) + SLACK_MB}
    report = ", ".join(f"{n} {warm[n]:.0f}->{after[n]:.0f} MB" for n in sorted(warm))
    print(f"{CAMPAIGN_REQUESTS} hostile requests in {took:.0f} s; RSS {report}")
    assert not grown, f"memory did not return near its warm figure: {grown}"
