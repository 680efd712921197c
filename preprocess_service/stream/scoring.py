"""Completed windows → the ensemble: the same Triton call as clip scoring, one per window, all at once.

Each window carries its own 3 s of sound (a one-window clip in the ensemble's layout); the calls go out
together, so Triton's dynamic batcher runs the ready windows as one batch."""

from __future__ import annotations

import asyncio

from avpenet import contract
from preprocess_service.stream.alerts import Window
from preprocess_service.stream.state import ReadyWindow
from preprocess_service.triton_client import TritonClient


async def score_windows(
    triton: TritonClient, ready: list[ReadyWindow], request_id: str
) -> tuple[list[Window], str]:
    """(a scored Window per ready window, the ensemble version that answered); raises as TritonClient."""
    results = await asyncio.gather(*(triton.infer(w.inputs, request_id=request_id) for w in ready))
    scored = []
    for w, result in zip(ready, results, strict=True):
        out = result.outputs
        score = float(out[contract.SCORE.name][0, 0])
        low, high = (float(v) for v in out[contract.INTERVAL.name][0])
        audio_w, visual_w = (float(v) for v in out[contract.MODALITY_WEIGHTS.name][0])
        scored.append(
            Window(w.index, w.start_s, w.end_s, score, low, high, contract.level_of(score), audio_w, visual_w)
        )
    return scored, results[-1].model_version
