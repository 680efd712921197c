"""The watchdog tells a busy Triton from a hung one (unit test, fake probe and progress counter).

Under a burst of 60-s clips the probe's one window waits behind minutes of queued windows: a timeout while
real calls are being answered is load, not a hang, and must not turn the gateway's readiness off."""

from __future__ import annotations

import asyncio

from preprocess_service.watchdog import TritonWatchdog


def _watchdog(answered: list[int], calls_during_probe: int) -> TritonWatchdog:
    async def probe(timeout_s: float) -> None:
        answered[0] += calls_during_probe  # real scoring calls answered while the probe waits
        raise TimeoutError("probe not answered")

    return TritonWatchdog(probe, period_s=1.0, timeout_s=0.01, failures=2, progress=lambda: answered[0])


def test_a_probe_timing_out_while_calls_are_answered_is_busy_not_a_failure():
    answered = [0]
    watchdog = _watchdog(answered, calls_during_probe=3)
    results = [asyncio.run(watchdog.check_once()) for _ in range(5)]
    assert results == [True] * 5
    assert watchdog.healthy and watchdog.failures == 0 and watchdog.busy == 5


def test_a_probe_timing_out_while_nothing_is_answered_trips_the_watchdog():
    answered = [0]
    watchdog = _watchdog(answered, calls_during_probe=0)  # a hung stub answers nothing
    assert [asyncio.run(watchdog.check_once()) for _ in range(2)] == [False, False]
    assert not watchdog.healthy and watchdog.busy == 0
