"""Video is admitted by the media seconds in flight to the FeatureExtractor, refused up front (429 +
Retry-After, before any decoding) beyond `limits.max_video_seconds_in_flight`; the hop's deadline scales with
the clip's length. The rule: preprocess_service/README.md, *Admission*."""

from __future__ import annotations

import asyncio

import pytest
from support.gateway import mp4_bytes, wav_bytes
from support.testmedia import noise_frames, video_bytes

from avpenet import contract
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
        assert "10 s of video in flight (limit 10 s" in str(refused.value)  # a reason an integrator can act on
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

    async def __call__(self, request: ScoreRequest, carrier) -> object:
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
