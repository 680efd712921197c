"""Admission control: a bounded number of requests in flight per replica, refused fast when full; video
also bounded by the media seconds in flight to the FeatureExtractor (what it costs there: video_admission.py).

Queuing beyond capacity only turns overload into timeouts and memory growth, so a full replica answers 429 /
RESOURCE_EXHAUSTED at once with Retry-After, before any decoding; a video clip waits (already uploaded, inside
its request slot) at most `max_video_wait_s`, and only when the measured rate says it will be done in time.
Ray Serve's `max_queued_requests` bounds the queue in front of the replica the same way. The rule and its
reasoning: preprocess_service/README.md, *Admission*.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from avpenet import contract
from avpenet.errors import TooLarge
from preprocess_service.errors import Overloaded

if TYPE_CHECKING:
    from preprocess_service.settings import Limits


class InFlightLimiter:
    """Counts requests inside `admit()`; the event loop is single-threaded, so no lock is needed.

    `busy` is the refusal's reason, formatted with the count (`n`) and the `limit`. `also` adds work that
    holds no slot but loads what the slots protect: scoring calls Triton still computes after their caller
    left or their deadline passed (they are never cancelled, and Triton's parts have no queue timeout that
    would drop them: triton_client.py `abandoned`)."""

    def __init__(
        self,
        limit: int,
        retry_after_s: int,
        busy: str = "gateway busy: {n} requests in flight (limit {limit}); retry shortly",
        also: Callable[[], int] = lambda: 0,
        full: Callable[[], None] = lambda: None,
    ) -> None:
        self.limit = limit
        self.also = also
        self.full = full  # called at the limit, before the 429: it may raise a truer refusal instead
        self.retry_after_s = retry_after_s
        self.busy = busy
        self.in_flight = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[Slot]:
        n = self.in_flight + self.also()
        if n >= self.limit:
            self.full()
            raise Overloaded(self.busy.format(n=n, limit=self.limit), self.retry_after_s)
        self.in_flight += 1
        try:
            yield Slot(self)
        finally:
            self.in_flight -= 1


class Slot:
    """An admitted request's place in an `InFlightLimiter`, which it may give back while it only waits."""

    def __init__(self, limiter: InFlightLimiter) -> None:
        self.limiter = limiter

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Given back for a wait that loads nothing the slots protect (a retry under an Idempotency-Key
        waiting for its first request, which holds a slot of its own), so repeats of one request cannot
        fill the replica; taken back when the wait ends, even at the limit: the answer it waited for is
        rendered in it, and a retry that goes on to score in its first request's place calls `readmit`."""
        self.limiter.in_flight -= 1
        try:
            yield
        finally:
            self.limiter.in_flight += 1

    def readmit(self) -> None:
        """Overloaded (429) as at admission when the others in flight fill the replica: this slot was taken
        back past the limit, and must not score there."""
        limiter = self.limiter
        if (n := limiter.in_flight - 1 + limiter.also()) >= limiter.limit:
            limiter.full()
            raise Overloaded(limiter.busy.format(n=n, limit=limiter.limit), limiter.retry_after_s)


def video_share(limits: Limits) -> InFlightLimiter:
    """The request slots of a gateway replica that video uploads may hold; the others are kept for audio and
    landmark uploads, which a backlog of videos waiting for the FeatureExtractor must not starve."""
    kept = limits.max_in_flight - limits.video_slots
    return InFlightLimiter(
        limits.video_slots,
        limits.retry_after_s,
        busy=f"video uploads busy: {{n}} video requests on this gateway replica (limit {{limit}}; {kept} of "
        f"its {limits.max_in_flight} request slots are kept for audio and landmark uploads); retry after "
        f"{limits.retry_after_s} s",
    )


def check_upload_size(n_bytes: int, limit: int) -> None:
    if n_bytes > limit:
        raise TooLarge(f"upload is {n_bytes} bytes; the limit is {limit} bytes")


def check_duration(seconds: float, limit: float) -> None:
    if seconds > limit:
        raise TooLarge(f"media lasts {seconds:.1f} s; the limit is {limit:.0f} s per request")


def check_audio_samples(n_samples: int, limit_s: float) -> None:
    check_duration(n_samples / contract.SAMPLE_RATE, limit_s)
