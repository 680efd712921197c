"""Where Ray's processes log: `avpenet serve` (LocalStack with `logs_to_stderr`) sends the workers' output,
the gateway's audit lines among it, to its own stderr (Ray's own components at warnings, its C++ processes
at errors), because the stop removes Ray's temp dir and the files in it; the tests and the bench keep Ray's
files, where the tests read the audit lines. That the lines really reach the command's output and stay after
it stopped: test_serve_lifecycle.py (slow, `make reliability`)."""

from __future__ import annotations

import os

import pytest
from support.stack_env import env_at_ray_start

from preprocess_service import stack as stack_mod
from preprocess_service.ray_node import QUIET_RAY_ENV, SERVICE_LOG_ENV

LOG_ENV = {**SERVICE_LOG_ENV, **QUIET_RAY_ENV}


class _Started(Exception):
    """Raised by the fake LocalStack that `avpenet serve` builds."""


@pytest.mark.parametrize("to_stderr", [False, True])
def test_only_a_service_stack_sends_rays_logs_to_stderr(monkeypatch, to_stderr) -> None:
    for name in LOG_ENV:
        monkeypatch.delenv(name, raising=False)
    got = env_at_ray_start(monkeypatch, LOG_ENV, logs_to_stderr=to_stderr)
    assert got == (LOG_ENV if to_stderr else dict.fromkeys(LOG_ENV))
    assert all(name not in os.environ for name in LOG_ENV)  # the stack's stop restored it


def test_avpenet_serve_runs_a_service_stack(monkeypatch) -> None:
    import argparse

    from preprocess_service import serve

    made: dict = {}

    def fake_stack(**kwargs):
        made.update(kwargs)
        raise _Started()

    monkeypatch.setattr(stack_mod, "LocalStack", fake_stack)
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    with pytest.raises(_Started):
        serve.run(parser.parse_args(["--no-grpc"]))
    assert made["logs_to_stderr"] is True
