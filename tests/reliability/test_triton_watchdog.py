"""A hung Triton stub against the session stack: readiness must say so within seconds, and it must heal.

The session Triton is restarted on a copy of the repository whose audio_frontend hangs on a marker request
(hung_stub_model.py). After the marker, the models still report "ready" to Triton's own health API, but the
gateway's watchdog (real probe inferences) turns `/readyz` 503 and gRPC health NOT_SERVING, and scoring is
refused at once with 503 instead of waiting for Triton's deadline. Then `ensemble.supervisor` (what
`avpenet serve` runs) kills and restarts Triton, and a control clip scores exactly as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus.harness import http_post
from corpus.wire import CTYPE, valid_clip
from hung_triton import hang_triton, hung_repository
from support.gateway import API_KEY, readiness
from support.polling import wait_until

from ensemble import DEFAULT_REPOSITORY

pytestmark = pytest.mark.integration

NOT_READY_S = 20.0  # watchdog: period 3 s + 2 probes of 3 s, on a busy box
RECOVER_S = 90.0


def restart_on(server, repo) -> None:
    server.repo = Path(repo).resolve()
    server.restart(stop_timeout_s=0.0)  # SIGKILL: the test needs no drain, and a hung stub allows none


def test_hung_stub_turns_readiness_off_and_the_supervisor_heals_it(gateway_stack, triton_server, tmp_path):
    from grpc_health.v1 import health_pb2

    from ensemble.supervisor import TritonSupervisor

    serving = (200, health_pb2.HealthCheckResponse.SERVING)
    not_serving = (503, health_pb2.HealthCheckResponse.NOT_SERVING)
    body = valid_clip()[0]
    restart_on(triton_server, hung_repository(tmp_path))
    try:
        scores = lambda: http_post(gateway_stack.http_url, body, CTYPE, key=API_KEY).status == 200
        wait_until(scores, RECOVER_S, "the gateway does not score on the test repository")
        before = http_post(gateway_stack.http_url, body, CTYPE, key=API_KEY)
        assert readiness(gateway_stack) == serving
        hung_pid = triton_server.pid

        hang_triton(triton_server.grpc_url)
        noticed = wait_until(lambda: readiness(gateway_stack) == not_serving, NOT_READY_S,
                             "readiness still claims SERVING while a stub hangs")  # fmt: skip
        assert triton_server.is_ready(), "Triton's own health API should still say ready (that is the point)"
        refused = http_post(gateway_stack.http_url, body, CTYPE, key=API_KEY, timeout=30)
        assert refused.status == 503 and refused.seconds < 2.0, (refused.status, refused.seconds)
        assert refused.headers["retry-after"]

        supervisor = TritonSupervisor(triton_server)
        healed = wait_until(lambda: supervisor.check() and readiness(gateway_stack) == serving, RECOVER_S,
                            "not healed")  # fmt: skip
        assert supervisor.restarts == 1 and triton_server.pid != hung_pid
        after = http_post(gateway_stack.http_url, body, CTYPE, key=API_KEY)
        assert after.status == 200
        assert abs(json.loads(after.detail)["score"] - json.loads(before.detail)["score"]) < 1e-4
        print(f"hung stub: NOT_SERVING after {noticed:.1f} s; healed {healed:.1f} s after supervision began")
    finally:
        restart_on(triton_server, DEFAULT_REPOSITORY)
        wait_until(lambda: readiness(gateway_stack) == serving, RECOVER_S, "session stack not restored")
