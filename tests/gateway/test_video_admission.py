"""Video is admitted by the media seconds in flight to the FeatureExtractor, refused up front (429 +
Retry-After, before any decoding) beyond `limits.max_video_seconds_in_flight`; the hop's deadline scales with
the clip's length. The rule: preprocess_service/README.md, *Admission*."""

from __future__ import annotations

import asyncio

import pytest
from support.event_loop import settle
from support.gateway import mp4_bytes, wav_bytes
from support.testmedia import noise_frames, video_bytes

from avpenet import contract
from avpenet.errors import UndecodableMedia
from preprocess_service import telemetry
from preprocess_service.errors import FeaturesUnavailable, Overloaded, status_of
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings
from preprocess_service.video_admission import MediaSecondsLimiter, video_seconds


def clip(data: bytes) -> ScoreRequest:
    return ScoreRequest(clip=MediaPart(data=data), age_group="neonate")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Holder:
    """Holds `seconds` of a limiter's budget in a task until released; records the order clips started in."""

    started: list[str] = []

    def __init__(self, limiter: MediaSecondsLimiter, name: str, seconds: float, deadline_s: float = 15.0):
        self.name, self.release = name, asyncio.Event()
        self.task = asyncio.create_task(self._hold(limiter, seconds, deadline_s))

    async def _hold(self, limiter: MediaSecondsLimiter, seconds: float, deadline_s: float) -> float:
        async with limiter.admit(seconds, deadline_s) as waited_s:
            self.started.append(self.name)
            await self.release.wait()
        return waited_s


def test_clips_beyond_the_budget_wait_their_turn_first_in_first_out():
    async def scenario() -> None:
        Holder.started = []
        limiter = MediaSecondsLimiter(10.0, retry_after_s=3)
        a, b = Holder(limiter, "a", 6.0), Holder(limiter, "b", 4.0)
        await settle()
        c, d = Holder(limiter, "c", 5.0), Holder(limiter, "d", 1.0)  # 10 s in flight: both wait
        await settle()
        assert Holder.started == ["a", "b"] and limiter.waiting_s == 6.0 and limiter.in_flight_s == 10.0
        b.release.set()
        await settle()  # 6 s in flight: c (5 s) does not fit yet, and d (1 s) may not overtake it
        assert Holder.started == ["a", "b"] and limiter.in_flight_s == 6.0
        e = Holder(limiter, "e", 1.0)  # would fit, but arrives behind c: no overtaking either
        await settle()
        assert Holder.started == ["a", "b"] and limiter.waiting_s == 7.0
        a.release.set()
        await settle()
        assert (
            Holder.started == ["a", "b", "c", "d", "e"] and limiter.in_flight_s == 7.0 and not limiter.waiting
        )
        c.release.set(), d.release.set(), e.release.set()
        waits = await asyncio.gather(a.task, b.task, c.task, d.task, e.task)
        assert waits[0] == 0.0 and waits[1] == 0.0 and min(waits[2:]) > 0.0  # reported as the `queue` stage
        assert limiter.in_flight_s == 0 and limiter.requests == 0 and limiter.waiting_s == 0

    asyncio.run(scenario())


def test_before_a_rate_is_measured_more_than_one_budget_waiting_is_refused():
    async def scenario() -> None:
        limiter = MediaSecondsLimiter(10.0, retry_after_s=3)
        held = [Holder(limiter, "a", 10.0), Holder(limiter, "b", 6.0), Holder(limiter, "c", 4.0)]
        await settle()
        assert limiter.waiting_s == 10.0
        with pytest.raises(Overloaded) as refused:
            async with limiter.admit(1.0):
                pass
        assert status_of(refused.value) == (429, "RESOURCE_EXHAUSTED") and refused.value.retry_after_s == 3
        assert "10 s of video in flight (limit 10 s" in str(
            refused.value
        )  # a reason an integrator can act on
        assert "10 s waiting" in str(refused.value)
        for h in held:
            h.release.set()
        await asyncio.gather(*(h.task for h in held))
        assert limiter.in_flight_s == 0 and limiter.requests == 0

    asyncio.run(scenario())


def test_one_clip_longer_than_the_budget_runs_alone_and_seconds_are_returned_on_errors():
    async def scenario() -> None:
        limiter = MediaSecondsLimiter(5.0, retry_after_s=1)
        with pytest.raises(RuntimeError):
            async with limiter.admit(60.0):  # alone: admitted, however long
                raise RuntimeError("decoding failed")
        assert limiter.in_flight_s == 0 and limiter.requests == 0 and limiter.rate is None

    asyncio.run(scenario())


def test_a_caller_that_gives_up_while_waiting_leaves_the_queue_and_the_next_moves_up():
    async def scenario() -> None:
        Holder.started = []
        limiter = MediaSecondsLimiter(4.0, retry_after_s=1)
        a = Holder(limiter, "a", 4.0)
        await settle()
        b, c = Holder(limiter, "b", 3.0), Holder(limiter, "c", 1.0)
        await settle()
        assert limiter.waiting_s == 4.0
        b.task.cancel()  # its client disconnected
        await asyncio.gather(b.task, return_exceptions=True)
        assert limiter.waiting_s == 1.0 and len(limiter.waiting) == 1
        a.release.set()
        await settle()
        assert Holder.started == ["a", "c"]
        c.release.set()
        await asyncio.gather(a.task, c.task)
        assert limiter.in_flight_s == 0 and limiter.requests == 0 and not limiter.waiting

    asyncio.run(scenario())


def test_seconds_granted_to_a_caller_that_gave_up_in_the_same_turn_are_handed_back():
    async def scenario() -> None:
        limiter = MediaSecondsLimiter(4.0, retry_after_s=1)
        a = Holder(limiter, "a", 4.0)
        await settle()
        b = Holder(limiter, "b", 4.0)
        await settle()
        a.release.set()
        await asyncio.sleep(0)  # a releases: b is granted its seconds before its own task runs again
        b.task.cancel()  # ... and its caller gives up in that same turn
        await asyncio.gather(a.task, b.task, return_exceptions=True)
        assert b.task.cancelled()
        assert limiter.in_flight_s == 0 and limiter.requests == 0 and not limiter.waiting

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("max_wait_s", "reason"),
    [
        (0.05, "waited 0 s (the limit)"),  # waited 0.05 s, then gave up: a 429, the queue left clean
        (0.0, "4 s of video in flight (limit 4 s"),  # no waiting allowed: refused at once
    ],
)
def test_a_clip_that_cannot_start_within_the_wait_bound_is_refused_with_429(max_wait_s, reason):
    async def scenario() -> None:
        limiter = MediaSecondsLimiter(4.0, retry_after_s=2, max_wait_s=max_wait_s)
        a = Holder(limiter, "a", 4.0)
        await settle()
        with pytest.raises(Overloaded) as refused:
            async with limiter.admit(2.0, deadline_s=15.0):
                pass
        assert status_of(refused.value)[0] == 429 and reason in str(refused.value)
        assert not limiter.waiting and limiter.waiting_s == 0 and limiter.in_flight_s == 4.0
        a.release.set()
        await a.task

    asyncio.run(scenario())


def run_clips(limiter: MediaSecondsLimiter, clock: Clock, n: int, busy_s: float) -> None:
    """`n` 3-s clips one after another, each finished after `busy_s` of the clock."""

    async def run() -> None:
        for _ in range(n):
            async with limiter.admit(3.0, 15.0):
                clock.now += busy_s

    asyncio.run(run())


def measured(limiter: MediaSecondsLimiter, clock: Clock) -> None:
    """Ten 3-s clips, each finished in 1.5 s of busy time: the extractor does 2 s of video per second."""
    run_clips(limiter, clock, 10, 1.5)
    assert limiter.rate == pytest.approx(2.0)


def test_what_cannot_finish_within_its_wait_and_deadline_at_the_measured_rate_is_refused_up_front():
    clock = Clock()
    limiter = MediaSecondsLimiter(12.0, retry_after_s=2, max_wait_s=5.0, min_busy_s=5.0, clock=clock)
    measured(limiter, clock)

    async def scenario() -> Overloaded:
        held = [Holder(limiter, str(i), 3.0) for i in range(6)]  # 12 s in flight, 6 s waiting
        await settle()
        assert limiter.in_flight_s == 12.0 and limiter.waiting_s == 6.0
        nine = Holder(limiter, "nine", 9.0)  # 27 s ahead -> 13.5 s at 2 s/s, within 0.8 x (5 + 15) s: waits
        await settle()
        assert limiter.waiting_s == 15.0
        with pytest.raises(Overloaded) as refused:
            async with limiter.admit(8.0, 15.0):  # 35 s -> 17.5 s > 16 s: refused, not queued
                pass
        assert limiter.waiting_s == 15.0
        for h in (*held, nine):
            h.release.set()
        await asyncio.gather(*(h.task for h in (*held, nine)))
        assert limiter.in_flight_s == 0 and not limiter.waiting
        return refused.value

    refusal = asyncio.run(scenario())
    detail = str(refusal)
    assert "27 s of video in flight or waiting ahead" in detail and "would take about 18 s" in detail
    assert "5 s wait plus 15 s deadline" in detail
    assert refusal.retry_after_s == 2  # (35 - 2 x 16) / 2 = 1.5 s, at least the configured 2 s


def test_a_clip_waits_until_the_seconds_in_flight_are_done_within_its_deadline_at_the_rate():
    clock = Clock()
    limiter = MediaSecondsLimiter(100.0, retry_after_s=2, min_busy_s=5.0, clock=clock)
    measured(limiter, clock)

    async def scenario() -> None:
        Holder.started = []
        held = [Holder(limiter, str(i), 3.0, deadline_s=15.0) for i in range(3)]  # 9 s -> 4.5 s: all start
        await settle()
        late = Holder(limiter, "late", 3.0, deadline_s=5.0)  # 12 s -> 6 s > 0.8 x 5 s: waits, budget or not
        await settle()
        assert Holder.started == ["0", "1", "2"] and limiter.waiting_s == 3.0
        held[0].release.set()
        await settle()  # 9 s -> 4.5 s > 4 s: still waits
        assert "late" not in Holder.started
        held[1].release.set()
        await settle()  # 6 s -> 3 s: starts
        assert Holder.started[-1] == "late"
        for h in (*held, late):
            h.release.set()
        await asyncio.gather(*(h.task for h in (*held, late)))

    asyncio.run(scenario())


def test_the_retry_after_counts_the_clips_already_waiting():
    clock = Clock()
    limiter = MediaSecondsLimiter(12.0, retry_after_s=2, max_wait_s=5.0, min_busy_s=5.0, clock=clock)
    measured(limiter, clock)

    async def scenario() -> Overloaded:
        # 12 s in flight, 36 s waiting (clips with a longer deadline may wait that long)
        held = [Holder(limiter, str(i), 3.0, deadline_s=60.0) for i in range(16)]
        await settle()
        with pytest.raises(Overloaded) as refused:
            async with limiter.admit(3.0, 15.0):  # 51 s ahead -> 25.5 s at 2 s/s > 0.8 x (5 + 15) s
                pass
        for h in held:
            h.release.set()
        await asyncio.gather(*(h.task for h in held))
        return refused.value

    assert asyncio.run(scenario()).retry_after_s == 10  # ceil((51 - 2 x 16) / 2): the queue's own time


def test_idle_time_does_not_read_as_a_slow_extractor():
    clock = Clock()
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0, clock=clock)

    async def run() -> None:
        for _ in range(4):
            async with limiter.admit(3.0, 15.0):
                clock.now += 1.5
            clock.now += 600.0  # ten idle minutes between clips

    asyncio.run(run())
    assert limiter.rate == pytest.approx(2.0)


def test_failed_work_the_extractor_does_not_report_is_not_weighed_and_no_rate_is_guessed_before_it():
    """A clip cut at its deadline or whose caller left counted its busy time with no media done: every
    such clip lowered the rate (to 0.5 s/s here) and other callers' video was refused sooner."""
    clock = Clock()
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0, clock=clock)

    async def fail() -> None:
        async with limiter.admit(3.0, 15.0):
            clock.now += 3.0
            raise RuntimeError("timed out")

    async def finish() -> None:
        async with limiter.admit(3.0, 15.0):
            clock.now += 3.0

    with pytest.raises(RuntimeError):
        asyncio.run(fail())
    assert limiter.rate is None  # nothing finished: not measured yet
    asyncio.run(finish())
    asyncio.run(finish())
    assert limiter.rate == pytest.approx(1.0)  # 6 s of video finished in the 6 s spent on it


def slowed(limiter: MediaSecondsLimiter, clock: Clock) -> None:
    """A minute of 3-s clips at 2 s of video per second, then two at 0.5 s/s: other work took the cores."""
    run_clips(limiter, clock, 40, 1.5)
    assert limiter.rate == pytest.approx(2.0)
    run_clips(limiter, clock, 2, 6.0)


def test_a_slowdown_lowers_the_rate_within_a_deadline_and_it_rises_again_only_as_the_long_average():
    clock = Clock()
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0, clock=clock)
    slowed(limiter, clock)
    assert limiter.long.value(limiter.min_busy_s) > 1.3  # the 30-s average still reads most of the old rate
    assert limiter.rate < 0.7  # what admission reads: the slowdown, within one 15-s deadline
    run_clips(limiter, clock, 10, 1.5)  # the cores are back: 2 s/s again
    assert limiter.recent.value(5.0) > 1.9  # the last few seconds read the full rate ...
    assert limiter.rate == pytest.approx(limiter.long.value(limiter.min_busy_s))  # ... admission the lower
    assert limiter.rate < 1.8  # trusted again only as fast as the long average rises


def test_a_clip_the_long_average_would_start_waits_when_the_recent_rate_says_it_would_miss():
    clock = Clock()
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0, clock=clock)
    slowed(limiter, clock)
    long, recent = limiter.long.value(limiter.min_busy_s), limiter.rate
    share = MediaSecondsLimiter.ADMIT_SHARE

    async def scenario() -> None:
        Holder.started = []
        held = [Holder(limiter, str(i), 3.0) for i in range(2)]
        await settle()
        assert Holder.started == ["0", "1"]
        late = Holder(limiter, "late", 3.0, deadline_s=12.0)  # 9 s ahead
        await settle()
        assert 9.0 / long <= share * 12.0 < 9.0 / recent  # the long average would start it; not the recent
        assert "late" not in Holder.started and limiter.waiting_s == 3.0
        for h in (*held, late):
            h.release.set()
        await asyncio.gather(*(h.task for h in (*held, late)))
        assert "late" in Holder.started

    asyncio.run(scenario())


def late_clip_starts_at_once(limiter: MediaSecondsLimiter) -> bool:
    """Three 3-s clips in flight, then a 3-s clip with an 8-s deadline: 12 s ahead, 6 s at 2 s/s. Whether it
    started at once; it does start once one of the three is done (9 s ahead, 4.5 s: within 0.6 x 8 s)."""

    async def scenario() -> bool:
        Holder.started = []
        held = [Holder(limiter, str(i), 3.0) for i in range(3)]
        await settle()
        late = Holder(limiter, "late", 3.0, deadline_s=8.0)
        await settle()
        at_once = "late" in Holder.started
        held[0].release.set()
        await settle()
        assert "late" in Holder.started
        for h in (*held, late):
            h.release.set()
        await asyncio.gather(*(h.task for h in (*held, late)))
        return at_once

    return asyncio.run(scenario())


def test_a_missed_deadline_backs_admission_off_and_finished_clips_give_the_headroom_back():
    clock = Clock()
    limiters = []
    for _ in range(2):  # the same measured rate (2 s of video per second) in both
        limiters.append(MediaSecondsLimiter(100.0, retry_after_s=2, min_busy_s=5.0, clock=clock))
        measured(limiters[-1], clock)
    trusting, burnt = limiters
    assert trusting.share == burnt.share == MediaSecondsLimiter.ADMIT_SHARE
    assert late_clip_starts_at_once(trusting)  # 6 s <= 0.8 x 8 s

    burnt.missed(started_at=clock.now)  # a clip it started was cut at its deadline: estimate optimistic
    assert burnt.share == pytest.approx(0.6)
    assert not late_clip_starts_at_once(burnt)  # 6 s > 0.6 x 8 s: it waits for room instead
    assert burnt.share == pytest.approx(0.6 + 4 * MediaSecondsLimiter.RECOVERY)  # four clips finished

    for _ in range(20):
        clock.now += 1.0
        burnt.missed(started_at=clock.now)  # each started after the backoff before it
    assert burnt.share == MediaSecondsLimiter.MIN_SHARE  # backs off no further
    run_clips(burnt, clock, 100, 1.5)
    assert burnt.share == MediaSecondsLimiter.ADMIT_SHARE  # and recovers no further than the default


def test_clips_started_together_back_off_once_and_a_later_one_again():
    clock = Clock()
    limiter = MediaSecondsLimiter(100.0, retry_after_s=2, min_busy_s=5.0, clock=clock)
    measured(limiter, clock)
    together = clock.now  # a stall cuts every clip in flight, all started under the same share
    clock.now += 15.0
    for _ in range(15):
        limiter.missed(started_at=together)
    assert limiter.share == pytest.approx(MediaSecondsLimiter.ADMIT_SHARE * MediaSecondsLimiter.BACKOFF)
    clock.now += 1.0  # started under the lowered share, and still cut: the estimate is worse than that
    limiter.missed(started_at=clock.now)
    assert limiter.share == pytest.approx(MediaSecondsLimiter.ADMIT_SHARE * MediaSecondsLimiter.BACKOFF**2)


def test_a_clip_the_extractor_could_not_finish_in_time_backs_the_gateway_admission_off():
    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})

    async def timed_out(
        request: ScoreRequest, carrier, media_s: float = 0.0, timeout_s: float = 0.0
    ) -> object:
        raise FeaturesUnavailable(
            "video feature extraction did not finish within 15 s; send the clip again", 2
        )

    async def undecodable(
        request: ScoreRequest, carrier, media_s: float = 0.0, timeout_s: float = 0.0
    ) -> object:
        raise UndecodableMedia("not a readable video")

    entered: list[int] = []

    async def stalled(request: ScoreRequest, carrier, media_s: float = 0.0, timeout_s: float = 0.0) -> object:
        entered.append(len(entered))
        turn = entered[-1]
        while len(entered) < 2:  # both clips are in the extractor before either is cut
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05 * turn)  # ... and cut one after the other
        return await timed_out(request, carrier, media_s, timeout_s)

    async def scenario(extractor, clips: int = 1) -> tuple[BaseException, float]:
        service = ScoringService(settings, extractor)
        scorings = (service.score(clip(mp4_bytes(3.0)), protocol="http") for _ in range(clips))
        answers = await asyncio.gather(*scorings, return_exceptions=True)
        await service.close()
        assert all(isinstance(a, Exception) for a in answers)
        exposed = service.metrics.registry.get_sample_value(telemetry.VIDEO_ADMIT_SHARE)
        assert exposed == service.video_limiter.share  # what the replica's /metrics shows
        return answers[-1], service.video_limiter.share

    error, share = asyncio.run(scenario(timed_out))
    assert status_of(error)[0] == 503 and share == pytest.approx(0.6)  # backed off once
    error, share = asyncio.run(scenario(stalled, clips=2))
    assert status_of(error)[0] == 503 and share == pytest.approx(0.6)  # started together: backed off once
    error, share = asyncio.run(scenario(undecodable))  # the client's file, not the estimate
    assert status_of(error)[0] == 422 and share == MediaSecondsLimiter.ADMIT_SHARE


def test_a_clip_is_charged_what_its_header_declares_before_decoding():
    assert video_seconds(clip(mp4_bytes(4.0)), 60.0) == pytest.approx(4.0, abs=0.15)
    assert video_seconds(clip(mp4_bytes(4.0)), 2.0) == 2.0  # at most the length limit
    assert video_seconds(clip(mp4_bytes(0.3)), 60.0) == 1.0  # at least 1 s
    webm = video_bytes(noise_frames(10), contract.FPS, container="webm")
    assert video_seconds(clip(webm), 20.0) == 20.0  # no cheap header: charged the length limit
    assert video_seconds(clip(b"not a container at all"), 20.0) == 20.0
    audio_only = ScoreRequest(audio=MediaPart(data=wav_bytes(3.0)), age_group="adult")
    assert video_seconds(audio_only, 20.0) is None  # light uploads: request count only


def test_the_extractor_deadline_scales_with_the_clip():
    settings = GatewaySettings.load({"features_timeout_s": 15, "features_timeout_per_media_s": 0.5}, {})
    assert settings.features_deadline_s(3.0) == 15.0
    assert settings.features_deadline_s(60.0) == 30.0


class HeldExtractor:
    """Stands in for the FeatureExtractor: holds every call until released, counts the calls it got."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(
        self, request: ScoreRequest, carrier, media_s: float = 0.0, timeout_s: float = 0.0
    ) -> object:
        self.calls += 1
        await self.release.wait()
        raise RuntimeError("stand-in extractor: never reaches Triton in this test")


def test_a_clip_over_the_budget_waits_and_one_past_the_queue_is_refused_before_the_extractor_sees_it():
    settings = GatewaySettings.load(
        {"triton_url": "127.0.0.1:1", "grpc_enabled": False, "limits": {"max_video_seconds_in_flight": 6}}, {}
    )

    async def scenario() -> tuple[BaseException, int, float, float, int]:
        extractor = HeldExtractor()
        service = ScoringService(settings, extractor)
        data = mp4_bytes(4.0)
        first = asyncio.create_task(service.score(clip(data), protocol="http"))
        while extractor.calls == 0:  # wait for the condition, not for a time
            await asyncio.sleep(0.01)
        second = asyncio.create_task(service.score(clip(data), protocol="http"))
        while not service.video_limiter.waiting:
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:  # 4 s in flight, 4 s waiting: a third would exceed both
            await service.score(clip(data), protocol="http")
        held, waiting, calls = (
            service.video_limiter.in_flight_s,
            service.video_limiter.waiting_s,
            extractor.calls,
        )
        extractor.release.set()
        await asyncio.gather(first, second, return_exceptions=True)
        await service.close()
        return refused.value, calls, held, waiting, extractor.calls

    refusal, calls, held, waiting, calls_after = asyncio.run(scenario())
    assert calls == 1  # the second clip waited, the third was never sent for decoding
    assert held == pytest.approx(4.0, abs=0.15) and waiting == pytest.approx(4.0, abs=0.15)
    assert "retry after" in str(refusal)
    assert calls_after == 2  # once the first was done, the waiting clip went to the extractor


def test_videos_never_take_the_request_slots_kept_for_light_uploads():
    limits = {"max_in_flight": 3, "reserved_for_light": 1, "max_video_seconds_in_flight": 60}
    args = {"triton_url": "127.0.0.1:1", "grpc_enabled": False, "limits": limits}
    settings = GatewaySettings.load(args, {})

    async def held_video(service: ScoringService, data: bytes) -> None:
        with service.limiter.admit():  # the replica's request slot (no watchdog: there is no Triton here)
            await service.score(clip(data), protocol="http")

    async def both_held(extractor: HeldExtractor) -> None:
        while extractor.calls < 2:
            await asyncio.sleep(0.01)

    async def scenario() -> tuple[BaseException, bool, int]:
        extractor = HeldExtractor()
        service = ScoringService(settings, extractor)
        data = mp4_bytes(3.0)
        videos = [asyncio.create_task(held_video(service, data)) for _ in range(2)]
        await asyncio.wait_for(both_held(extractor), 30)
        with service.limiter.admit(), pytest.raises(Overloaded) as refused:  # the third slot is not for video
            await asyncio.wait_for(service.score(clip(data), protocol="http"), 10)  # admitted: it would wait
        with service.limiter.admit():  # ... but an audio or landmarks upload still gets it
            light_admitted = service.limiter.in_flight == 3
        extractor.release.set()
        await asyncio.gather(*videos, return_exceptions=True)
        await service.close()
        return refused.value, light_admitted, extractor.calls

    refusal, light_admitted, calls = asyncio.run(scenario())
    assert status_of(refusal)[0] == 429 and "kept for audio and landmark uploads" in str(refusal)
    assert "limit 2" in str(refusal) and light_admitted and calls == 2  # refused before the extractor


def test_video_keeps_at_least_one_slot_however_many_are_reserved():
    from preprocess_service.settings import Limits

    assert Limits(max_in_flight=16).video_slots == 12
    assert Limits(max_in_flight=2, reserved_for_light=4).video_slots == 1


def test_a_finished_clip_longer_than_its_header_counts_its_real_length():
    """A clip whose MP4 header said 1 s and that held 60 s was credited 1 s of media for 20 s of busy
    extractor: the rate fell from 3 to under 1 media s/s, and other clients' video was refused sooner."""
    now = [0.0]
    limiter = MediaSecondsLimiter(60, 2, clock=lambda: now[0])

    async def clip(declared: float, took: float, real: float) -> None:
        async with limiter.admit(declared, 60.0):
            now[0] += took
        limiter.credit(real - declared)  # what ScoringService does once the extractor says how long it was

    async def run() -> float:
        for _ in range(20):
            await clip(3.0, 1.0, 3.0)  # honest 3-s clips at 3 media s per busy s
        await clip(1.0, 20.0, 60.0)
        return limiter.rate

    assert asyncio.run(run()) > 2.5
