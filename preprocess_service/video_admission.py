"""Video admission: a clip goes to the FeatureExtractor when it is expected to be done within its deadline.

A video request's cost there grows with its length, so it is admitted by media seconds in flight and by the
rate the FeatureExtractor has been finishing them, not by a request count (limits.py counts requests). The
rule and the measurements behind it: preprocess_service/README.md, *Admission*.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from preprocess_service.errors import Overloaded, processed_seconds
from preprocess_service.extractor_rate import DecayedRate, Held

if TYPE_CHECKING:
    from preprocess_service.protocol import ScoreRequest


class MediaSecondsLimiter:
    """Admission by the media seconds a replica has sent to the FeatureExtractor and not yet got back.

    A request's cost there grows with its length (decoding and face tracking per frame: a 60-s clip costs
    about 20 times a 3-s one), so counting requests lets a handful of long clips fill the queue past every
    deadline. A clip **starts** (goes to the FeatureExtractor) when it fits: at most `budget_s` media seconds
    in flight and, once a rate is measured, those seconds done within `share` of its hop's deadline
    (one clip alone always starts, so a clip up to the length limit runs even with a smaller budget). A clip
    that does not fit **waits** here, first in first out, already uploaded and not yet decoded, for at most
    `max_wait_s`: a refused client sends the whole clip again (proxy and gateway CPU spent again, a few times
    per clip under load), so waiting is cheaper whenever it can end in time. Refused up front (429 +
    Retry-After), before any decoding:

    - by the measured rate: the media seconds the FeatureExtractor has been finishing per second of busy time
      (exponentially weighted, `tau_s`; while nothing is in flight the clock stops, so idle time does not read
      as slowness), or the same over the last few seconds (`fast_tau_s`) when that is lower: the rate falls
      within a deadline when other work takes the cores, and rises only as fast as the long average. A clip
      is refused when the seconds in flight and waiting ahead of it plus its own would not be done, at that
      rate, within `share` of its wait bound plus its deadline. The Retry-After is the time that queue
      needs to make room, so it grows with the clips already waiting;
    - until `min_busy_s` of busy time is measured: when more than one budget of seconds already waits;
    - with `max_wait_s` 0: whenever it does not fit (nothing waits).

    `share` is the headroom for the rate estimate's error: `ADMIT_SHARE` of the deadline at most. A started
    clip that still could not be finished in time (the caller reports it: `missed()`) proves the estimate
    optimistic on this machine, so the share backs off (x `BACKOFF`, down to `MIN_SHARE`); every clip finished
    gives back `RECOVERY`. On a CPU whose rate swings more than the headroom, clips are then refused up front
    (429) instead of being cut at their deadline (503) after they cost the extractor up to the whole deadline.
    Only a clip started after the last backoff backs off again: clips started together miss together when
    the extractor slows (15 answered within 1.1 s of each other in one bench round), and none of them tried
    the lowered share, so one backoff answers them all.

    A clip not started within `max_wait_s` (the rate fell meanwhile) leaves the queue with a 429; one whose
    caller gives up leaves it at once. A started clip that fails tells the rate only what the extractor
    reports it processed (`_release`): a failure it cannot report has its busy time weighed at the rate of
    the other work, credited at most its own length, so it never raises the rate and lowers it only when the
    clip took longer than the rest say its length takes. Single-threaded event loop: no lock.
    """

    ADMIT_SHARE = 0.8  # of the deadline, at most: headroom for the rate estimate's noise
    MIN_SHARE = 0.4  # the least it backs off to
    BACKOFF = 0.75  # the share's factor for each started clip that missed its deadline
    RECOVERY = 0.01  # given back for each clip finished (about 20 to undo a miss)
    RECENT_MIN_BUSY_S = 3.0  # busy seconds the recent rate needs before it may lower the estimate

    def __init__(
        self,
        budget_s: float,
        retry_after_s: int,
        *,
        max_wait_s: float = 15.0,
        tau_s: float = 30.0,
        fast_tau_s: float = 5.0,
        min_busy_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock  # the rate's clock (tests step it); waiting uses the event loop's own
        self.budget_s = budget_s
        self.retry_after_s = retry_after_s
        self.max_wait_s = max_wait_s
        self.min_busy_s = min_busy_s
        self.long = DecayedRate(tau_s)  # what the rate is, smoothed over clips
        self.recent = DecayedRate(fast_tau_s)  # what it is now: a slowdown shows within a deadline
        self.in_flight_s = 0.0
        self.held: list[Held] = []  # the clips started and not yet back
        # (seconds, the hop's deadline, resolved with its Held when the clip may start)
        self.waiting: collections.deque[tuple[float, float, asyncio.Future[Held]]] = collections.deque()
        self.share = self.ADMIT_SHARE  # of a deadline the estimate may fill (backs off on misses)
        self.backed_off_at = -math.inf  # `clock()` of the last backoff
        self._since = clock()

    @property
    def requests(self) -> int:
        """Clips started and not yet back."""
        return len(self.held)

    @property
    def waiting_s(self) -> float:
        """Media seconds waiting (the queue is at most `max_in_flight` long: summed, not tracked)."""
        return sum(seconds for seconds, _, turn in self.waiting if not turn.done())

    @property
    def rate(self) -> float | None:
        """Media seconds finished per busy second, or None while too little is measured: the long average, or
        the recent one when lower. With the long one alone, clips that had waited their turn were started
        into a slowdown it had not yet seen (p99 29 s against 13 s under loadtests.video_slowdown's hog;
        preprocess_service/README.md, *Admission*)."""
        long = self.long.value(self.min_busy_s)
        recent = self.recent.value(self.RECENT_MIN_BUSY_S) if long is not None else None
        return long if recent is None else min(long, recent)

    def _tick(self) -> None:
        """Weigh the busy time since the last tick, shared equally by the clips in flight (they share the
        extractor's threads), so a clip that fails unreported can be weighed apart from the rest."""
        now = self.clock()
        if self.held:  # the clock runs only while the extractor has work
            dt = now - self._since
            share = dt / len(self.held)
            for i, rate in enumerate((self.long, self.recent)):
                decay = rate.advance(dt)
                for held in self.held:
                    held.busy[i] = held.busy[i] * decay + share
        self._since = now

    def _fits(self, seconds: float, deadline_s: float) -> bool:
        """May start now: alone, or within the budget and done within its deadline at the measured rate."""
        if not self.requests:
            return True
        ahead, rate = self.in_flight_s + seconds, self.rate
        return ahead <= self.budget_s and (rate is None or ahead / rate <= self.share * deadline_s)

    def _refusal(self, seconds: float, deadline_s: float) -> Overloaded | None:
        if not self.waiting and self._fits(seconds, deadline_s):
            return None
        ahead, rate = self.in_flight_s + self.waiting_s + seconds, self.rate
        horizon_s = self.share * (self.max_wait_s + deadline_s)
        if rate is not None and ahead / rate > horizon_s:
            retry = min(max(self.retry_after_s, math.ceil((ahead - rate * horizon_s) / rate)), 60)
            return Overloaded(
                f"video feature extraction busy: {ahead - seconds:.0f} s of video in flight or waiting ahead "
                f"of this clip's {seconds:.1f} s would take about {ahead / rate:.0f} s at the current "
                f"{rate:.1f} s of video per second, over its {self.max_wait_s:.0f} s wait plus "
                f"{deadline_s:.0f} s deadline; retry after {retry} s",
                retry,
            )
        if self.max_wait_s <= 0 or (rate is None and self.waiting_s + seconds > self.budget_s):
            return Overloaded(
                f"video feature extraction busy: {self.in_flight_s:.0f} s of video in flight (limit "
                f"{self.budget_s:.0f} s per gateway replica) and {self.waiting_s:.0f} s waiting; this clip "
                f"declares {seconds:.1f} s; retry after {self.retry_after_s} s",
                self.retry_after_s,
            )
        return None

    def _take(self, seconds: float) -> Held:
        self._tick()
        self.in_flight_s += seconds
        held = Held(seconds)
        self.held.append(held)
        return held

    def credit(self, seconds: float) -> None:
        """Media seconds a finished clip held beyond what its header declared: the extractor did that work
        too, so the rate counts it (an understated header no longer reads as a slow extractor)."""
        if seconds > 0:
            self.long.finished(seconds)
            self.recent.finished(seconds)

    def missed(self, started_at: float) -> None:
        """A clip this limiter started at `started_at` (its `clock()`) could not be finished within its
        deadline: admit with more headroom, unless the clip was started before the last backoff."""
        if started_at < self.backed_off_at:
            return
        self.share = max(self.MIN_SHARE, self.share * self.BACKOFF)
        self.backed_off_at = self.clock()

    def _release(self, held: Held, finished: bool, processed_s: float | None = None) -> None:
        """A clip back from the extractor. The rate weighs only media the extractor says it processed:
        a finished clip's seconds (`credit` adds any beyond its header), a failed clip's reported ones
        (`errors.processed_seconds`: refused after its decode); a failed clip without a report (cut at its
        deadline, its caller gone, the extractor unavailable) has its share of the busy time weighed at the
        rate of the rest (`DecayedRate.as_the_rest`) up to its own length, so it does not raise the rate and
        lowers it only when it took longer than the rest say its length takes."""
        self._tick()
        if finished:
            self.credit(held.seconds)
            self.share = min(self.ADMIT_SHARE, self.share + self.RECOVERY)
        elif processed_s is not None:
            self.credit(processed_s)
        else:
            self.long.as_the_rest(held.busy[0], held.seconds)
            self.recent.as_the_rest(held.busy[1], held.seconds)
        self.held.remove(held)
        self.in_flight_s = max(0.0, self.in_flight_s - held.seconds) if self.held else 0.0
        self._wake()

    def _wake(self) -> None:
        """Start waiting clips in order while the head fits (charged here, before its task runs again)."""
        while self.waiting:
            seconds, deadline_s, turn = self.waiting[0]
            if not turn.done() and not self._fits(seconds, deadline_s):
                return
            self.waiting.popleft()
            if not turn.done():
                turn.set_result(self._take(seconds))

    async def _wait_turn(self, seconds: float, deadline_s: float, max_wait_s: float) -> Held:
        turn: asyncio.Future[Held] = asyncio.get_running_loop().create_future()
        entry = (seconds, deadline_s, turn)
        self.waiting.append(entry)
        try:
            async with asyncio.timeout(max_wait_s):
                return await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():  # started just as it gave up: hand the seconds back
                self._release(turn.result(), finished=False)
            elif entry in self.waiting:  # (a release may have dropped it already, once cancelled)
                self.waiting.remove(entry)
                self._wake()  # the clip behind it may fit now
            if isinstance(exc, TimeoutError):
                raise Overloaded(
                    f"video feature extraction busy: this clip waited {max_wait_s:.0f} s (the limit) "
                    f"behind {self.in_flight_s:.0f} s of video in flight and was not started; retry after "
                    f"{self.retry_after_s} s",
                    self.retry_after_s,
                ) from None
            raise

    @contextlib.asynccontextmanager
    async def admit(
        self, seconds: float, deadline_s: float = math.inf, *, max_wait_s: float = math.inf
    ) -> AsyncIterator[float]:
        """Hold `seconds` of the budget for the block; yields the seconds spent waiting for them, at most
        `max_wait_s` (what is left of the request's time budget) or the limiter's own `max_wait_s`. A block
        that raises an error carrying `errors.processed_seconds` is credited those media seconds."""
        self._tick()
        refusal = self._refusal(seconds, deadline_s)
        if refusal is not None:
            raise refusal
        waited_s = 0.0
        if not self.waiting and self._fits(seconds, deadline_s):
            held = self._take(seconds)
        else:
            t0 = time.perf_counter()
            held = await self._wait_turn(seconds, deadline_s, min(self.max_wait_s, max_wait_s))
            waited_s = time.perf_counter() - t0
        try:
            yield waited_s
        except BaseException as exc:  # what the extractor processed rides on its error (extract.py)
            self._release(held, finished=False, processed_s=processed_seconds(exc))
            raise
        self._release(held, finished=True)


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
