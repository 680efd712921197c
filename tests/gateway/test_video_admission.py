"""Video is admitted by the media seconds in flight to the FeatureExtractor, refused up front (429 +
Retry-After, before any decoding) beyond `limits.max_video_seconds_in_flight`; the hop's deadline scales with
the clip's length. The rule: preprocess_service/README.md, *Admission*."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from support.gateway import mp4_bytes, wav_bytes
from support.testmedia import noise_frames, video_bytes

from avpenet import contract
from preprocess_service import limits
from preprocess_service.errors import Overloaded, status_of
from preprocess_service.limits import MediaSecondsLimiter, video_seconds
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings


def clip(data: bytes) -> ScoreRequest:
    return ScoreRequest(clip=MediaPart(data=data), age_group="neonate")


def test_clips_are_admitted_until_their_seconds_fill_the_budget():
    limiter = MediaSecondsLimiter(10.0, retry_after_s=3)
    with limiter.admit(4.0), limiter.admit(6.0):
        with pytest.raises(Overloaded) as refused, limiter.admit(1.0):
            pass
        assert status_of(refused.value) == (429, "RESOURCE_EXHAUSTED") and refused.value.retry_after_s == 3
        assert "10 s of video in flight (limit 10 s" in str(
            refused.value
        )  # a reason an integrator can act on
    assert limiter.in_flight_s == 0 and limiter.requests == 0
    with limiter.admit(10.0):  # exactly the budget fits
        pass


def test_one_clip_longer_than_the_budget_runs_alone_and_seconds_are_returned_on_errors():
    limiter = MediaSecondsLimiter(5.0, retry_after_s=1)
    with pytest.raises(RuntimeError), limiter.admit(60.0):  # alone: admitted, however long
        with pytest.raises(Overloaded), limiter.admit(1.0):
            pass
        raise RuntimeError("decoding failed")
    assert limiter.in_flight_s == 0 and limiter.requests == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_what_cannot_finish_within_its_deadline_at_the_measured_rate_is_refused_up_front(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(limits.time, "monotonic", clock)
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0)
    for _ in range(10):  # the extractor finishes 3 s of video every 1.5 s of busy time: 2 s of video per s
        with limiter.admit(3.0, deadline_s=15.0):
            clock.now += 1.5
    assert limiter.rate == pytest.approx(2.0)
    with contextlib.ExitStack() as held:
        for _ in range(6):  # 18 s of video ahead -> 9 s at 2 s/s, within 0.8 x 15 s: admitted
            held.enter_context(limiter.admit(3.0, 15.0))
        with pytest.raises(Overloaded) as refused, limiter.admit(9.0, 15.0):  # 27 s -> 13.5 s > 12 s
            pass
    detail = str(refused.value)
    assert "would take about 14 s" in detail and "over its 15 s deadline" in detail
    assert refused.value.retry_after_s == 2  # (27 - 2 x 12) / 2 = 1.5 s, at least the configured 2 s


def test_idle_time_does_not_read_as_a_slow_extractor(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(limits.time, "monotonic", clock)
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0)
    for _ in range(4):
        with limiter.admit(3.0, 15.0):
            clock.now += 1.5
        clock.now += 600.0  # ten idle minutes between clips
    assert limiter.rate == pytest.approx(2.0)


def test_failed_work_lowers_the_rate_and_no_rate_is_guessed_before_it_is_measured(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(limits.time, "monotonic", clock)
    limiter = MediaSecondsLimiter(1000.0, retry_after_s=2, min_busy_s=5.0)
    with pytest.raises(RuntimeError), limiter.admit(3.0, 15.0):
        clock.now += 3.0
        raise RuntimeError("timed out")
    assert limiter.rate is None  # 3 s busy, nothing finished: not measured yet
    with limiter.admit(3.0, 15.0):
        clock.now += 3.0
    assert limiter.rate == pytest.approx(0.5, rel=0.1)  # 3 s of video finished in 6 s of busy time


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

    async def __call__(self, request: ScoreRequest, carrier, media_s: float = 0.0) -> object:
        self.calls += 1
        await self.release.wait()
        raise asyncio.CancelledError  # never reaches Triton in this test


def test_a_clip_over_the_budget_is_refused_before_the_extractor_sees_it():
    settings = GatewaySettings.load(
        {"triton_url": "127.0.0.1:1", "grpc_enabled": False, "limits": {"max_video_seconds_in_flight": 6}}, {}
    )

    async def scenario() -> tuple[BaseException, int, float]:
        extractor = HeldExtractor()
        service = ScoringService(settings, extractor)
        data = mp4_bytes(4.0)
        first = asyncio.create_task(service.score(clip(data), protocol="http"))
        while extractor.calls == 0:  # wait for the condition, not for a time
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:
            await service.score(clip(data), protocol="http")
        held = service.video_limiter.in_flight_s
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await service.close()
        return refused.value, extractor.calls, held

    refusal, calls, held = asyncio.run(scenario())
    assert calls == 1  # the second clip was never sent for decoding
    assert held == pytest.approx(4.0, abs=0.15)
    assert "retry after" in str(refusal)
