"""The stage histogram's `kind` label: each scored request is filed under what it sent and how long it was,
so the latency alert holds each kind to its own threshold (monitoring/rules/avpenet-alerts.yml) instead of
one p99 over video, long clips and light uploads together. No Triton: the ensemble's answer is made up."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from support.responses import window_outputs

from avpenet import contract
from preprocess_service import telemetry
from preprocess_service.extract import Extracted
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings
from preprocess_service.triton_client import InferOutput


def test_kind_is_the_path_and_whether_the_clip_is_long() -> None:
    assert telemetry.request_kind(video=False, windows=1) == "light"  # a 3-s WAV + landmarks
    assert telemetry.request_kind(video=False, windows=telemetry.LONG_WINDOWS) == "light"
    assert telemetry.request_kind(video=False, windows=58) == "light_long"  # the bedside minute
    assert telemetry.request_kind(video=True, windows=8) == "video"  # a 10-s MP4
    assert telemetry.request_kind(video=True, windows=telemetry.LONG_WINDOWS + 1) == "video_long"
    assert {telemetry.request_kind(v, w) for v in (False, True) for w in (1, 58)} == set(telemetry.KINDS)


def test_every_stage_protocol_and_kind_exists_at_zero_and_no_other_kind_is_accepted() -> None:
    metrics = telemetry.Metrics()
    count = telemetry.STAGE_SECONDS + "_count"
    for stage in telemetry.STAGES:
        for kind in telemetry.KINDS:
            labels = {"stage": stage, "protocol": "http", "kind": kind}
            assert metrics.registry.get_sample_value(count, labels) == 0.0, labels  # zeros, not gaps
    with pytest.raises(ValueError, match="request kind"):
        metrics.observe_stages({"total": 1.0}, "http", "mp4")  # an unbounded label would be a new series


def _extracted(windows: int) -> Extracted:
    inputs = {contract.AUDIO_PRESENT.name: np.ones((windows, 1), np.float32)}
    return Extracted(inputs=inputs, duration_s=windows + 2.0, modalities=["audio", "visual"])


def _scored_kind(request: ScoreRequest, windows: int) -> str:
    """Score `request` through the service (features of `windows` windows) and return the kind it was
    filed under in the `total` stage."""

    async def features(request, carrier, media_s: float = 0.0, timeout_s: float = 0.0) -> Extracted:
        return _extracted(windows)

    async def infer(request, extracted, budget=None) -> tuple[InferOutput, dict]:
        return InferOutput(window_outputs(extracted.n_windows), "1"), {"avpenet": "1"}

    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})

    async def run() -> ScoringService:
        service = ScoringService(settings, features)  # video: the injected extractor
        service._extract_in_thread = features  # light uploads: decoded in the replica
        service._infer_pinned = infer
        await service.score(request, protocol="grpc")
        await service.close()
        return service

    service = asyncio.run(run())
    count, total = telemetry.STAGE_SECONDS + "_count", {"stage": "total", "protocol": "grpc"}
    sample = service.metrics.registry.get_sample_value
    filed = [k for k in telemetry.KINDS if sample(count, total | {"kind": k})]
    assert len(filed) == 1, filed
    return filed[0]


@pytest.mark.parametrize(
    ("fields", "windows", "kind"),
    [
        (("audio", "landmarks"), 1, "light"),
        (("audio",), 58, "light_long"),
        (("clip",), 1, "video"),
        (("audio", "video"), 58, "video_long"),
    ],
)
def test_a_scored_request_is_filed_under_its_kind(fields: tuple[str, ...], windows: int, kind: str) -> None:
    request = ScoreRequest(**{f: MediaPart(data=b"\x00" * 16) for f in fields}, age_group="adult")
    assert _scored_kind(request, windows) == kind
