"""The local supervisor restarts a hung Triton, never a busy one (unit test: fake probe, fake metrics).

A busy Triton completes other ensemble requests while the probe waits behind them; a hung stub completes none
(the steps before it still execute, so a part's executions are no evidence)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from avpenet import contract
from ensemble import supervisor
from ensemble.client import EXEC_COUNT, REQUEST_SUCCESS


class _Server(SimpleNamespace):
    def restart(self, stop_timeout_s: float = 0.0) -> None:
        self.restarted += 1


@pytest.fixture
def triton(monkeypatch):
    state = {"success": 0.0, "visual_execs": 0.0, "per_probe": {}}

    def fake_probe(url: str, timeout_s: float) -> None:
        for key, step in state["per_probe"].items():  # what Triton did while the probe waited
            state[key] += step
        raise TimeoutError("probe not answered")

    def fake_metrics(url: str) -> dict:
        return {
            contract.ENSEMBLE.name: {REQUEST_SUCCESS: state["success"]},
            contract.VISUAL_ENCODER.name: {EXEC_COUNT: state["visual_execs"]},
        }

    monkeypatch.setattr(supervisor, "probe", fake_probe)
    monkeypatch.setattr(supervisor, "read_metrics", fake_metrics)
    return state


def _supervisor() -> supervisor.TritonSupervisor:
    server = _Server(pid=1, grpc_url="g", metrics_url="m", restarted=0)
    return supervisor.TritonSupervisor(server, failures=2, timeout_s=0.01)


def test_a_probe_missed_while_other_requests_complete_is_busy(triton):
    triton["per_probe"] = {"success": 5.0, "visual_execs": 5.0}
    sup = _supervisor()
    assert all(sup.check() for _ in range(4))
    assert sup.server.restarted == 0 and sup.busy == 4


def test_a_hung_part_is_restarted_although_earlier_steps_still_execute(triton):
    triton["per_probe"] = {"visual_execs": 1.0}  # the first step runs; nothing completes
    sup = _supervisor()
    assert [sup.check(), sup.check()] == [False, False]
    assert sup.server.restarted == 1 and sup.busy == 0


def test_restarts_that_fail_back_off_and_then_give_up(triton):
    """A Triton that cannot start was tried every other probe, for ever: `avpenet serve` answered 503 and
    exited 0 on Ctrl-C, so systemd or Docker never saw it fail."""

    class _Broken(_Server):
        def restart(self, stop_timeout_s: float = 0.0) -> None:
            self.restarted += 1
            raise RuntimeError("tritonserver exited with code 1")

    broken = _Broken(pid=None, grpc_url="g", metrics_url="m", restarted=0)
    sup = supervisor.TritonSupervisor(broken, failures=2)
    tried_at = []
    for n in range(1, 200):
        attempts = sup.server.restarted
        assert not sup.check()
        if sup.server.restarted > attempts:
            tried_at.append(n)
        if sup.gave_up:
            break
    assert sup.gave_up and len(tried_at) == supervisor.MAX_FAILED_RESTARTS
    gaps = [b - a for a, b in zip([0, *tried_at], tried_at, strict=False)]
    assert gaps == [2, 4, 8, 16, 32]  # twice as many failed probes before each next attempt
