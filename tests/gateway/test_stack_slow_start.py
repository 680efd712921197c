"""A busy box starts Ray's workers slowly; Serve's controller killed a proxy not ready 5 s after it was
created (worker start included), and the whole stack failed to start with ActorDiedError ("killed by
`ray.kill` ... never ran"). LocalStack gives the proxy a minute (preprocess_service/ray_node.py
SLOW_START_ENV) unless the environment sets its own.

The unit test checks what Ray's processes are given. The slow test starts real Triton + Ray Serve in a
subprocess twice: with a ready timeout shorter than any proxy's start (0.01 s), which fails as a busy box did
(Serve's start fails, or the stack starts with its proxy killed: so Ray still reads this variable, and were it
renamed LocalStack's setting would do nothing), then as LocalStack sets it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from support.stack_env import env_at_ray_start

from preprocess_service.ray_node import SLOW_START_ENV

READY_ENV = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"


@pytest.mark.parametrize("user_value", [None, "12"])
def test_rays_processes_get_a_minute_for_the_proxy_unless_set(monkeypatch, user_value) -> None:
    if user_value is None:
        monkeypatch.delenv(READY_ENV, raising=False)
    else:
        monkeypatch.setenv(READY_ENV, user_value)
    assert env_at_ray_start(monkeypatch, [READY_ENV]) == {READY_ENV: user_value or SLOW_START_ENV[READY_ENV]}
    assert os.environ.get(READY_ENV) == user_value  # the stack's stop restored the environment


SCRIPT = textwrap.dedent(
    """
    import time
    import urllib.error
    import urllib.request

    from preprocess_service.stack import LocalStack

    with LocalStack(grpc_port=None) as local:
        deadline = time.monotonic() + 120  # readiness also waits for the replicas' warm-up
        while True:
            try:
                with urllib.request.urlopen(local.http_url + "/readyz", timeout=30) as reply:
                    print("ready", reply.status)
                    break
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
    """
)


@pytest.mark.slow
@pytest.mark.integration
def test_the_proxy_ready_timeout_decides_whether_a_slow_stack_starts() -> None:
    def start(extra: dict[str, str]) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != READY_ENV} | extra
        return subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900
        )

    too_short = start({READY_ENV: "0.01"})  # the start fails, or its proxy is gone when first called
    failed = ("ActorDiedError", "Connection refused")
    assert too_short.returncode != 0 and any(f in too_short.stderr for f in failed), too_short.stderr[-3000:]
    done = start({})
    assert done.returncode == 0 and "ready 200" in done.stdout, done.stderr[-4000:]
