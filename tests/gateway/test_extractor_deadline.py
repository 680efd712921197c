"""The Gateway's hop to the FeatureExtractor is bounded: a replica that is dead, restarting or saturated is
a 503 + Retry-After (UNAVAILABLE over gRPC) at `features_timeout_s` (longer for long clips); the abandoned
Serve request is cancelled, also when the caller goes away.
A fake handle (tests/support/fake_extractor.py) stands in for Ray's DeploymentHandle; the real kill is in
tests/reliability/test_faults.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError
from support.fake_extractor import FakeHandle, FakeResponse

from avpenet.errors import InputError
from preprocess_service.deployments import extract_remotely
from preprocess_service.errors import FeaturesUnavailable, status_of
from preprocess_service.settings import GatewaySettings

SETTINGS = GatewaySettings.load({"features_timeout_s": 0.05, "grpc_enabled": False}, {})


def call(response: FakeResponse) -> object:
    return asyncio.run(extract_remotely(FakeHandle(response), object(), {}, SETTINGS))


def test_a_slow_extractor_is_a_503_with_retry_after_and_the_request_is_cancelled():
    response = FakeResponse("never used", delay_s=5.0)
    with pytest.raises(FeaturesUnavailable) as caught:
        call(response)
    assert status_of(caught.value) == (503, "UNAVAILABLE")
    assert caught.value.retry_after_s == SETTINGS.limits.retry_after_s
    assert "send the clip again" in str(caught.value)
    assert response.cancelled


def test_a_dead_replica_is_a_503_not_an_internal_error_and_names_no_ray_class():
    with pytest.raises(FeaturesUnavailable) as caught:
        call(FakeResponse(ActorDiedError))
    assert str(caught.value) == "video feature extraction unavailable; send the clip again"


class _FullQueue(BackPressureError):
    """What Serve raises when every FeatureExtractor replica's queue is full."""

    def __init__(self) -> None:
        super().__init__(num_queued_requests=64, max_queued_requests=64)


def test_a_full_extractor_queue_is_a_503_busy_with_retry_after_not_an_internal_error():
    with pytest.raises(FeaturesUnavailable, match="is busy") as caught:
        call(FakeResponse(_FullQueue))
    assert status_of(caught.value) == (503, "UNAVAILABLE") and caught.value.retry_after_s


def test_results_and_input_errors_pass_through():
    assert call(FakeResponse("extracted")) == "extracted"
    refusal = InputError("no audio track")
    with pytest.raises(InputError, match="no audio track"):
        call(FakeResponse(refusal))


def test_the_deadline_scales_with_the_clip_and_reaches_the_replica():
    handle = FakeHandle(FakeResponse("extracted"))
    settings = GatewaySettings.load({"features_timeout_s": 2, "features_timeout_per_media_s": 0.5}, {})
    before = time.time()
    assert asyncio.run(extract_remotely(handle, object(), {}, settings, media_s=60.0)) == "extracted"
    assert before + 30 <= handle.deadline <= time.time() + 30  # 60 s x 0.5, not the 2 s floor


def test_work_the_replica_stopped_at_its_deadline_is_a_503():
    with pytest.raises(FeaturesUnavailable, match="did not finish within"):
        call(FakeResponse(None))


def test_a_caller_that_goes_away_cancels_the_extraction():
    response = FakeResponse("never used", delay_s=5.0)
    settings = GatewaySettings.load({"features_timeout_s": 30}, {})

    async def scenario() -> None:
        task = asyncio.create_task(extract_remotely(FakeHandle(response), object(), {}, settings))
        await asyncio.sleep(0)  # let it start waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert response.cancelled


def test_a_clip_cut_by_its_own_short_budget_does_not_back_video_admission_off():
    """A caller's 3.6-s proxy timeout leaves its clip 0.6 s: missing that says nothing of the extractor's
    rate, yet each such clip backed admission off (0.6 → 0.45 → 0.4), and every other client got more 429s."""
    from support.gateway import mp4_bytes

    from preprocess_service.protocol import MediaPart, ScoreRequest
    from preprocess_service.service import ScoringService

    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})
    handle = FakeHandle(FakeResponse("never", delay_s=30.0))

    async def remote(request, carrier, media_s, timeout_s):
        return await extract_remotely(handle, request, carrier, settings, media_s, timeout_s)

    async def run() -> list[float]:
        service = ScoringService(settings, remote)
        request = ScoreRequest(clip=MediaPart(data=mp4_bytes(3.0)), age_group="adult")
        shares = []
        try:
            for _ in range(3):
                with pytest.raises(Exception):  # noqa: B017 - spent or unavailable: its own budget was short
                    await service.score(
                        request, protocol="http", budget=settings.budget({"x-request-timeout-seconds": "3.6"})
                    )
                shares.append(service.video_limiter.share)
        finally:
            await service.close()
        return shares

    first = ScoringService(settings, remote).video_limiter.share
    assert asyncio.run(run()) == [first] * 3


def test_a_pin_to_a_version_not_served_is_refused_before_the_video_is_decoded():
    """It was judged only at inference: a client pinned to a version retired by a rollout burnt up to 30 s
    of extractor CPU and a video slot per request, to get its 404."""
    from support.gateway import mp4_bytes

    from preprocess_service.errors import NotFound
    from preprocess_service.protocol import MediaPart, ScoreRequest
    from preprocess_service.service import ScoringService

    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})
    decoded: list[float] = []

    async def extractor(request, carrier, media_s, timeout_s):
        decoded.append(media_s)
        raise AssertionError("the pin must be judged first")

    class Repository:
        async def get(self):
            return [{"name": settings.model_name, "version": "1", "state": "READY"}]

    async def run() -> None:
        service = ScoringService(settings, extractor)
        service.repository = Repository()
        pinned = {settings.model_name: "2"}
        request = ScoreRequest(clip=MediaPart(data=mp4_bytes(3.0)), age_group="adult", model_versions=pinned)
        try:
            with pytest.raises(NotFound, match="version"):
                await service.score(request, protocol="http")
        finally:
            await service.close()

    asyncio.run(run())
    assert decoded == []
