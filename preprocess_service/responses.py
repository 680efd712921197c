"""The answer to a scored clip: the per-window timeline and the clip's aggregate, from Triton's outputs.

The clip score is `avpenet.aggregate.aggregate_windows`, the code evaluation uses: the served aggregate is
the measured one.
"""

from __future__ import annotations

from avpenet import contract
from avpenet.aggregate import adult_probability, aggregate_windows
from preprocess_service.extract import Extracted
from preprocess_service.protocol import (
    AgeRead,
    Interval,
    ModalityWeights,
    ScoreRequest,
    ScoreResponse,
    WindowScore,
    contradicted,
)
from preprocess_service.triton_client import InferOutput


def build_response(
    request: ScoreRequest,
    extracted: Extracted,
    result: InferOutput,
    versions: dict[str, str],
    timings_ms: dict[str, float],
    model_name: str,
) -> ScoreResponse:
    """Per-window timeline plus the clip aggregate (avpenet.aggregate.aggregate_windows, as evaluation)."""
    out = result.outputs
    scores = out[contract.SCORE.name].reshape(-1)
    probs = out[contract.CLASS_PROBS.name].reshape(-1, len(contract.LEVELS))
    intervals = out[contract.INTERVAL.name].reshape(-1, 2)
    weights = out[contract.MODALITY_WEIGHTS.name].reshape(-1, 2)
    span_end = max(extracted.duration_s, contract.WINDOW_SECONDS)
    timeline = [
        WindowScore(
            index=i,
            start_s=i * contract.HOP_SECONDS,
            end_s=min(contract.window_end_s(i), span_end),
            score=float(scores[i]),
            level=contract.level_of(float(scores[i])),
            class_probs={lvl: float(p) for lvl, p in zip(contract.LEVELS, probs[i], strict=True)},
            interval_90=Interval(low=float(intervals[i, 0]), high=float(intervals[i, 1])),
            modality_weights=ModalityWeights(audio=float(weights[i, 0]), visual=float(weights[i, 1])),
        )
        for i in range(len(scores))
    ]
    clip = aggregate_windows(out[contract.SCORE.name], out[contract.LOG_VARIANCE.name], probs, weights)
    interval, weights = clip[contract.INTERVAL.name], clip[contract.MODALITY_WEIGHTS.name]
    score = float(clip[contract.SCORE.name])
    return ScoreResponse(
        request_id=request.request_id,
        score=score,
        level=contract.level_of(score),
        class_probs={
            lvl: float(p) for lvl, p in zip(contract.LEVELS, clip[contract.CLASS_PROBS.name], strict=True)
        },
        interval_90=Interval(low=float(interval[0]), high=float(interval[1])),
        modality_weights=ModalityWeights(audio=float(weights[0]), visual=float(weights[1])),
        timeline=timeline,
        duration_s=round(extracted.duration_s, 3),
        modalities=extracted.modalities,
        masked=extracted.masked,
        age_group=request.age_group,
        age_read=age_read(request, out),
        model_name=model_name,
        model_versions=versions,
        timings_ms={k: round(v, 2) for k, v in timings_ms.items()},
    )


def age_read(request: ScoreRequest, outputs: dict) -> AgeRead | None:
    """The age group the clip reads as, when the answering fusion reads one (fusion 16 on; an older one, or
    one without a fitted head, reads none): for a request that named no age group, the group its clip was
    scored as; for one that named its group, only when the clip surely reads as the other (a mistyped age)."""
    if contract.ADULT_PROBABILITY.name not in outputs:
        return None
    p = adult_probability(outputs[contract.ADULT_PROBABILITY.name], outputs[contract.MODALITY_WEIGHTS.name])
    if p is None or (request.age_group != "unknown" and not contradicted(p, request.age_group)):
        return None
    return AgeRead.of(p, request.age_group)
