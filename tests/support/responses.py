"""Scoring answers built the way the gateway builds them, from made-up ensemble outputs (no Triton)."""

from __future__ import annotations

import numpy as np

from avpenet import contract
from preprocess_service.extract import Extracted
from preprocess_service.protocol import MediaPart, ScoreRequest, ScoreResponse
from preprocess_service.responses import build_response
from preprocess_service.triton_client import InferOutput


def window_outputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ensemble outputs of n windows built the way the fusion builds them (interval from the calibrated
    log-variance)."""
    from avpenet.aggregate import Z_INTERVAL

    rng = np.random.default_rng(seed)
    score = rng.uniform(1, 9, (n, 1)).astype(np.float32)
    logvar = rng.uniform(-2, 0, (n, 1)).astype(np.float32)
    half = Z_INTERVAL * np.exp(logvar / 2)
    interval = np.clip(np.concatenate([score - half, score + half], 1), 0, 10).astype(np.float32)
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    audio_w = rng.uniform(0.2, 0.8, (n, 1)).astype(np.float32)
    adult = rng.uniform(0, 1, (n, 1)).astype(np.float32)
    return {
        contract.SCORE.name: score,
        contract.CLASS_PROBS.name: probs,
        contract.LOG_VARIANCE.name: logvar,
        contract.INTERVAL.name: interval,
        contract.MODALITY_WEIGHTS.name: np.concatenate([audio_w, 1 - audio_w], 1),
        contract.ADULT_PROBABILITY.name: adult,
    }


def make_response(n: int = 4, **request_fields) -> tuple[ScoreResponse, dict[str, np.ndarray]]:
    out = window_outputs(n)
    request = ScoreRequest(audio=MediaPart(data=b"x"), **{"age_group": "neonate", **request_fields})
    extracted = Extracted(inputs={}, duration_s=n + 2.0, modalities=["audio", "visual"])
    timings = {"decode": 1.0, "features": 2.0, "triton": 3.0, "total": 7.0}
    versions = {"avpenet": "1", "fusion": "2"}
    resp = build_response(request, extracted, InferOutput(out, "1"), versions, timings, "avpenet")
    return resp, out
