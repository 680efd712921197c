"""Admission control: a full replica refuses at once with 429 and Retry-After."""

from __future__ import annotations

import pytest

from avpenet.errors import TooLarge
from preprocess_service.errors import (
    Overloaded,
    status_of,
)
from preprocess_service.limits import InFlightLimiter


class TestLimits:
    def test_in_flight_limit_refuses_fast(self):
        limiter = InFlightLimiter(2, retry_after_s=3)
        with limiter.admit(), limiter.admit():
            with pytest.raises(Overloaded) as info, limiter.admit():
                pass
            assert info.value.retry_after_s == 3 and status_of(info.value) == (429, "RESOURCE_EXHAUSTED")
        assert limiter.in_flight == 0
        assert status_of(TooLarge("x")) == (413, "RESOURCE_EXHAUSTED")

    def test_calls_still_running_for_callers_that_left_take_slots(self):
        """Triton calls are never cancelled (triton_client.py): what a gone caller left running still loads
        Triton, so it counts against the slots until it ends."""
        abandoned = [1]
        limiter = InFlightLimiter(2, retry_after_s=3, also=lambda: abandoned[0])
        with limiter.admit():
            with pytest.raises(Overloaded, match="2 requests in flight"), limiter.admit():
                pass
            abandoned[0] = 0  # Triton answered it
            with limiter.admit():
                pass


class TestFullWhileTritonHangs:
    """Calls a hung Triton owes hold their slots until it is restarted (triton_client.py `abandoned`): a full
    replica then says 503 "not answering", the reason an integrator can act on, instead of 429 "busy"."""

    def test_a_full_replica_answers_503_while_the_watchdog_finds_triton_hung(self):
        import asyncio

        from preprocess_service.errors import TritonUnavailable
        from preprocess_service.service import ScoringService
        from preprocess_service.settings import GatewaySettings

        limits = {"max_in_flight": 1, "reserved_for_light": 0, "retry_after_s": 4}
        settings = GatewaySettings.load(
            {"triton_url": "127.0.0.1:1", "grpc_enabled": False, "limits": limits}, {}
        )

        async def go() -> tuple[BaseException, BaseException]:
            service = ScoringService(settings)
            try:
                with service.admit():
                    with pytest.raises(Overloaded) as busy, service.admit():
                        pass
                    service.watchdog.failures = service.watchdog.failures_to_trip  # found hung
                    with pytest.raises(TritonUnavailable) as hung, service.admit():
                        pass
                return busy.value, hung.value
            finally:
                await service.close()

        busy, hung = asyncio.run(go())
        assert status_of(busy)[0] == 429
        assert status_of(hung) == (503, "UNAVAILABLE") and hung.retry_after_s == 4
        assert "not answering" in str(hung)

    def test_the_limiters_full_hook_may_refuse_instead(self):
        class Hung(Exception):
            pass

        def full() -> None:
            raise Hung

        limiter = InFlightLimiter(1, retry_after_s=3, full=full)
        with limiter.admit(), pytest.raises(Hung), limiter.admit():
            pass
        assert limiter.in_flight == 0
