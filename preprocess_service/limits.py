"""Admission control: a bounded number of requests in flight per replica, refused fast when full; video
also bounded by the media seconds in flight to the FeatureExtractor (what it costs there).

Queuing beyond capacity only turns overload into timeouts and memory growth, so a full replica answers 429 /
RESOURCE_EXHAUSTED at once with Retry-After, before any decoding. Ray Serve's `max_queued_requests` bounds
the queue in front of the replica the same way. The rule and its reasoning: preprocess_service/README.md,
*Admission*.
"""

from __future__ import annotations

import contextlib
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
    deadline. A clip that would take the total over `budget_s` is refused at once (429 + Retry-After) before
    any decoding; one clip alone is always admitted, so a clip up to the length limit can run even when the
    budget is set below it. Single-threaded event loop: no lock.
    """

    def __init__(self, budget_s: float, retry_after_s: int) -> None:
        self.budget_s = budget_s
        self.retry_after_s = retry_after_s
        self.in_flight_s = 0.0
        self.requests = 0

    @contextlib.contextmanager
    def admit(self, seconds: float) -> Iterator[None]:
        if self.requests and self.in_flight_s + seconds > self.budget_s:
            raise Overloaded(
                f"video feature extraction busy: {self.in_flight_s:.0f} s of video in flight (limit "
                f"{self.budget_s:.0f} s per gateway replica) and this clip declares {seconds:.1f} s; "
                f"retry after {self.retry_after_s} s",
                self.retry_after_s,
            )
        self.in_flight_s += seconds
        self.requests += 1
        try:
            yield
        finally:
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
