"""Admission control: a bounded number of requests in flight per replica, refused fast when full; video
also bounded by the media seconds in flight to the FeatureExtractor (what it costs there).

Queuing beyond capacity only turns overload into timeouts and memory growth, so a full replica answers 429 /
RESOURCE_EXHAUSTED at once with Retry-After, before any decoding. Ray Serve's `max_queued_requests` bounds
the queue in front of the replica the same way. The rule and its reasoning: preprocess_service/README.md,
*Admission*.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from avpenet import contract
from avpenet.errors import TooLarge
from preprocess_service.errors import Overloaded

if TYPE_CHECKING:
    from preprocess_service.protocol import ScoreRequest


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


class MediaSecondsLimiter:
    """Admission by the media seconds a replica has sent to the FeatureExtractor and not yet got back.

    A request's cost there grows with its length (decoding and face tracking per frame: a 60-s clip costs
    about 20 times a 3-s one), so counting requests lets a handful of long clips fill the queue past every
    deadline. Two bounds, both checked before any decoding (429 + Retry-After):

    - a budget: at most `budget_s` media seconds in flight (one clip alone is always admitted, so a clip up
      to the length limit runs even when the budget is set below it);
    - the measured rate: the media seconds the FeatureExtractor has been finishing per second of busy time
      (exponentially weighted, `tau_s`; while nothing is in flight the clock stops, so idle time does not
      read as slowness). A clip is refused when the seconds ahead of it plus its own, at that rate, would
      not finish within `ADMIT_SHARE` of its deadline: it would be refused later anyway, after its decoding.
      Until `min_busy_s` of busy time is measured only the budget applies.

    Single-threaded event loop: no lock.
    """

    ADMIT_SHARE = 0.8  # of the deadline: headroom for the rate estimate's noise

    def __init__(
        self, budget_s: float, retry_after_s: int, *, tau_s: float = 30.0, min_busy_s: float = 5.0
    ) -> None:
        self.budget_s = budget_s
        self.retry_after_s = retry_after_s
        self.tau_s = tau_s
        self.min_busy_s = min_busy_s
        self.in_flight_s = 0.0
        self.requests = 0
        self.done_s = 0.0  # media seconds finished, decayed
        self.busy_s = 0.0  # seconds with work in flight, decayed the same way
        self._since = time.monotonic()

    @property
    def rate(self) -> float | None:
        """Media seconds finished per busy second, or None while too little is measured."""
        return self.done_s / self.busy_s if self.busy_s >= self.min_busy_s and self.done_s > 0 else None

    def _tick(self) -> None:
        now = time.monotonic()
        if self.requests:  # the clock runs only while the extractor has work
            dt = now - self._since
            decay = math.exp(-dt / self.tau_s)
            self.done_s *= decay
            self.busy_s = self.busy_s * decay + dt
        self._since = now

    def _refusal(self, seconds: float, deadline_s: float) -> Overloaded | None:
        ahead = self.in_flight_s + seconds
        if self.requests and ahead > self.budget_s:
            return Overloaded(
                f"video feature extraction busy: {self.in_flight_s:.0f} s of video in flight (limit "
                f"{self.budget_s:.0f} s per gateway replica) and this clip declares {seconds:.1f} s; "
                f"retry after {self.retry_after_s} s",
                self.retry_after_s,
            )
        rate = self.rate
        if self.requests and rate is not None and ahead / rate > self.ADMIT_SHARE * deadline_s:
            wait = math.ceil((ahead - rate * self.ADMIT_SHARE * deadline_s) / rate)
            retry = min(max(self.retry_after_s, wait), 60)
            return Overloaded(
                f"video feature extraction busy: {self.in_flight_s:.0f} s of video ahead of this clip's "
                f"{seconds:.1f} s would take about {ahead / rate:.0f} s at the current {rate:.1f} s of video "
                f"per second, over its {deadline_s:.0f} s deadline; retry after {retry} s",
                retry,
            )
        return None

    @contextlib.contextmanager
    def admit(self, seconds: float, deadline_s: float = math.inf) -> Iterator[None]:
        self._tick()
        refusal = self._refusal(seconds, deadline_s)
        if refusal is not None:
            raise refusal
        self.in_flight_s += seconds
        self.requests += 1
        finished = False
        try:
            yield
            finished = True
        finally:
            self._tick()
            self.done_s += seconds if finished else 0.0  # only work that finished tells the rate
            self.requests -= 1
            self.in_flight_s = max(0.0, self.in_flight_s - seconds) if self.requests else 0.0


def video_seconds(request: ScoreRequest, max_duration_s: float) -> float | None:
    """What a video request costs the FeatureExtractor, in media seconds, read before any decoding: the
    length its MP4/MOV header declares (`mp4index.declared_seconds`, microseconds), at least 1 s and at most
    `max_duration_s`; a WebM/MKV or a header without a duration is charged `max_duration_s`. None for a
    request without video (decoded in the gateway, admitted by request count only)."""
    part = request.clip if request.clip is not None else request.video
    if part is None:
        return None
    from avpenet.features import media, mp4index

    declared = None
    if media.sniff(bytes(part.data[: media.HEAD_BYTES])) == "isobmff":
        declared = mp4index.declared_seconds(part.data)
    if declared is None:
        return max_duration_s
    return min(max(declared, 1.0), max_duration_s)


def check_upload_size(n_bytes: int, limit: int) -> None:
    if n_bytes > limit:
        raise TooLarge(f"upload is {n_bytes} bytes; the limit is {limit} bytes")


def check_duration(seconds: float, limit: float) -> None:
    if seconds > limit:
        raise TooLarge(f"media lasts {seconds:.1f} s; the limit is {limit:.0f} s per request")


def check_audio_samples(n_samples: int, limit_s: float) -> None:
    check_duration(n_samples / contract.SAMPLE_RATE, limit_s)
