"""A video clip that fails at the FeatureExtractor does not lower the admission rate other callers' video is
judged by: the extractor reports the media it decoded before an error (a 422 after the full decode), and a
failure it cannot report (cut at its deadline, its caller gone) is weighed at the rate of the rest, up to
its own length. Before, each such
clip added busy time and no media done, so one client repeating it (deliberately or not) got everyone's
video refused. The rule: preprocess_service/README.md, *Admission*."""

from __future__ import annotations

import asyncio

import pytest
from support.event_loop import settle
from support.gateway import extractor_replica
from support.testmedia import noise_frames, video_bytes

from avpenet import contract
from avpenet.errors import NothingToScore
from preprocess_service.errors import processed_seconds, report_processed
from preprocess_service.extract import extract
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings, Limits
from preprocess_service.video_admission import MediaSecondsLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def measured(clock: Clock) -> MediaSecondsLimiter:
    """A limiter that has seen ten 3-s clips each finished in 1.5 s: 2 s of video per busy second."""
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0, clock=clock)

    async def run() -> None:
        for _ in range(10):
            async with limiter.admit(3.0, 15.0):
                clock.now += 1.5

    asyncio.run(run())
    assert limiter.rate == pytest.approx(2.0)
    return limiter


def test_clips_that_fail_without_a_report_weigh_as_the_rest_up_to_their_own_length():
    """A failure the extractor cannot report on is weighed at the rate of the rest, but credited at most its
    own length: a caller gone after 1 s leaves the rate as it was; clips cut at their deadline lower it to
    what they showed at best (3 s of media in 15 s), not to nothing (before: 2e-7 s/s, the last 5 s reading
    no video done), nor leave it at 2 s/s while every clip is cut (an extractor that really slowed)."""
    clock = Clock()
    limiter = measured(clock)

    async def fails_after(busy_s: float) -> None:
        async with limiter.admit(3.0, 15.0):
            clock.now += busy_s
            raise TimeoutError("cut at its deadline, or its caller gone")

    for _ in range(3):
        with pytest.raises(TimeoutError):
            asyncio.run(fails_after(1.0))
    assert limiter.rate == pytest.approx(2.0)
    for _ in range(5):
        with pytest.raises(TimeoutError):
            asyncio.run(fails_after(15.0))
    assert limiter.rate == pytest.approx(3.0 / 15.0)


def test_a_failing_clip_in_flight_beside_a_finishing_one_is_weighed_by_its_share():
    """The extractor's 2 s/s shared by two clips: the good one (3 s) is done after 3 s, the hostile one is
    cut 3 s later: its half of the shared 3 s and its 3 s alone are weighed at the rate of the rest, up to
    its 3 s of media (4.5 busy seconds for at most 3 s of media: the rate falls, not to the 0.79 s/s the cut
    clip alone read before)."""
    clock = Clock()
    limiter = measured(clock)
    cut, done = asyncio.Event(), asyncio.Event()

    async def clip(ends: asyncio.Event, fails: bool) -> None:
        async with limiter.admit(3.0, 15.0):
            await ends.wait()
            if fails:
                raise TimeoutError("cut at its deadline")

    async def scenario() -> None:
        hostile = asyncio.create_task(clip(cut, fails=True))
        good = asyncio.create_task(clip(done, fails=False))
        await settle()
        clock.now += 3.0
        done.set()
        await good
        clock.now += 3.0
        cut.set()
        with pytest.raises(TimeoutError):
            await hostile

    asyncio.run(scenario())
    assert 0.79 < limiter.rate < 2.0 and limiter.long.value(0.0) > 1.5  # the 30-s average barely moves


def test_a_clip_refused_after_its_decode_is_credited_the_media_the_extractor_reports():
    clock = Clock()
    limiter = measured(clock)

    async def refused(processed_s: float) -> None:
        async with limiter.admit(1.0, 15.0):  # its header declared 1 s
            clock.now += 3.0
            raise report_processed(NothingToScore("no usable face and no audio"), processed_s)

    for _ in range(5):
        with pytest.raises(NothingToScore):
            asyncio.run(refused(6.0))  # 6 s decoded and tracked in 3 s: the extractor's usual rate
    assert limiter.rate == pytest.approx(2.0)  # was 0.08 s/s: none of the 30 s of video counted
    with pytest.raises(NothingToScore):
        asyncio.run(refused(0.5))  # costly for its length: its busy time counts, as a finished clip's does
    assert limiter.rate < 1.9


def test_the_extractor_reports_what_it_decoded_on_an_error_after_the_decode_and_the_report_survives_ray():
    """A video with neither a face nor sound is decoded and tracked to its end, then refused (422)."""
    import ray.cloudpickle as cloudpickle  # what Serve pickles the replica's answer with

    seconds = 2.0
    data = video_bytes(noise_frames(int(seconds * contract.FPS)), contract.FPS)
    request = ScoreRequest(video=MediaPart(data=data), age_group="adult")
    with pytest.raises(NothingToScore) as caught:
        extract(request, Limits())
    assert processed_seconds(caught.value) == pytest.approx(seconds, abs=0.1)
    answer = asyncio.run(extractor_replica().extract(request, {}))  # the replica returns the error
    assert isinstance(answer, NothingToScore)
    assert processed_seconds(cloudpickle.loads(cloudpickle.dumps(answer))) == pytest.approx(seconds, abs=0.1)


def test_the_gateway_credits_what_the_extractor_reports_for_a_refused_clip():
    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})
    data = video_bytes(noise_frames(int(3 * contract.FPS)), contract.FPS)

    async def no_face(request: ScoreRequest, carrier, media_s: float = 0.0, timeout_s: float = 0.0) -> object:
        raise report_processed(NothingToScore("no usable face and no audio"), 3.0)

    async def scenario() -> float:
        service = ScoringService(settings, no_face)
        try:
            with pytest.raises(NothingToScore):
                await service.score(
                    ScoreRequest(video=MediaPart(data=data), age_group="adult"), protocol="http"
                )
        finally:
            await service.close()
        return service.video_limiter.long.done_s

    assert asyncio.run(scenario()) == pytest.approx(3.0)  # was 0: busy time with nothing done
