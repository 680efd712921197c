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
