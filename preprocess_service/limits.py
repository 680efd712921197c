"""Admission control: a bounded number of requests in flight per replica, refused fast when full.

Queuing beyond capacity only turns overload into timeouts and memory growth, so a full replica answers 429 /
RESOURCE_EXHAUSTED at once with Retry-After. Ray Serve's `max_queued_requests` bounds the queue in
front of the replica the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from avpenet import contract
from avpenet.errors import TooLarge
from preprocess_service.errors import Overloaded


class InFlightLimiter:
    """Counts requests inside `admit()`; the event loop is single-threaded, so no lock is needed."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise Overloaded(
                f"gateway busy: {self.in_flight} requests in flight (limit {self.limit}); retry shortly",
                self.retry_after_s,
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def check_upload_size(n_bytes: int, limit: int) -> None:
    if n_bytes > limit:
        raise TooLarge(f"upload is {n_bytes} bytes; the limit is {limit} bytes")


def check_duration(seconds: float, limit: float) -> None:
    if seconds > limit:
        raise TooLarge(f"media lasts {seconds:.1f} s; the limit is {limit:.0f} s per request")


def check_audio_samples(n_samples: int, limit_s: float) -> None:
    check_duration(n_samples / contract.SAMPLE_RATE, limit_s)
