"""Light uploads (audio, landmarks) are decoded in the gateway replica; only video takes the extractor hop."""

from __future__ import annotations

import asyncio

import pytest
from support import testmedia
from support.gateway import face_track, wav_bytes

from preprocess_service.extract import Extracted
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings


class RecordingExtractor:
    """Stands in for the FeatureExtractor deployment's handle: records what it was sent."""

    def __init__(self) -> None:
        self.seen: list[ScoreRequest] = []

    async def __call__(
        self, request: ScoreRequest, carrier, media_s: float = 0.0, timeout_s: float = 0.0
    ) -> Extracted:
        self.seen.append(request)
        raise AssertionError("not reached in these tests")


def service_with(extractor: RecordingExtractor) -> ScoringService:
    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})
    return ScoringService(settings, extractor)


def test_audio_and_landmarks_are_extracted_locally():
    remote = RecordingExtractor()
    service = service_with(remote)
    light = ScoreRequest(
        audio=MediaPart(data=wav_bytes(3.5)),
        landmarks=MediaPart(data=face_track(3.5).to_npz_bytes()),
        age_group="adult",
    )
    chosen = service._extractor_for(light)
    assert chosen is not remote
    extracted = asyncio.run(chosen(light, {}))
    assert extracted.n_windows == 2 and extracted.modalities == ["audio", "visual"]
    assert not remote.seen


@pytest.mark.parametrize("fmt", ["AIFF", "CAF", "W64", "AMR"])
def test_apple_wave64_and_amr_audio_is_scored_with_landmarks(fmt):
    service = service_with(RecordingExtractor())
    if fmt == "AMR":
        sound = testmedia.amr_nb_bytes(testmedia.tone(3.5, 8000))
    else:
        sound = testmedia.audio_bytes(testmedia.tone(3.5, 44_100), 44_100, fmt)
    request = ScoreRequest(
        audio=MediaPart(data=sound, filename=f"a.{fmt.lower()}"),
        landmarks=MediaPart(data=face_track(3.5).to_npz_bytes()),
        age_group="adult",
    )
    extracted = asyncio.run(service._extractor_for(request)(request, {}))  # was 415 "unsupported audio type"
    assert extracted.n_windows == 2 and extracted.modalities == ["audio", "visual"]


def test_video_goes_to_the_extractor_deployment():
    remote = RecordingExtractor()
    service = service_with(remote)
    for field in ("clip", "video"):
        request = ScoreRequest(**{field: MediaPart(data=b"\x00" * 16)}, age_group="adult")
        assert service._extractor_for(request) is remote
