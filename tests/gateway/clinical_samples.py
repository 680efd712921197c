"""A ScoreResponse as the service builds it, for the FHIR / HL7 v2 / audit unit tests (no stack needed)."""

from __future__ import annotations

from avpenet import contract
from preprocess_service.protocol import Interval, ModalityWeights, ScoreResponse, WindowScore

VERSIONS = {"avpenet": "1", "audio_frontend": "1", "audio_encoder": "2", "visual_encoder": "1", "fusion": "3"}
CLIP_SHA = "ab" * 32


def response(
    age_group: str = "neonate", score: float = 6.5, recorded_at: str | None = "2026-05-01T10:15:00Z"
):
    level = contract.level_of(score)
    window = WindowScore(
        index=0, start_s=0.0, end_s=3.0, score=score, level=level,
        class_probs={"low": 0.1, "moderate": 0.3, "high": 0.6},
        interval_90=Interval(low=score - 1.5, high=score + 1.2),
        modality_weights=ModalityWeights(audio=0.6, visual=0.4),
    )  # fmt: skip
    return ScoreResponse(
        request_id="req-7f3a",
        score=score,
        level=level,
        class_probs={"low": 0.1, "moderate": 0.3, "high": 0.6},
        interval_90=Interval(low=score - 1.5, high=min(score + 1.2, 10.0)),
        modality_weights=ModalityWeights(audio=0.6, visual=0.4),
        timeline=[window],
        duration_s=3.0,
        modalities=["audio", "visual"],
        age_group=age_group,
        model_name="avpenet",
        model_versions=dict(VERSIONS),
        timings_ms={"total": 100.0},
        clip_sha256=CLIP_SHA,
        recorded_at=recorded_at,
        scored_at="2026-05-01T10:16:02Z",
    )
