"""Completed windows → the ensemble: the same Triton call as clip scoring, all ready windows at once."""

from __future__ import annotations

import numpy as np

from avpenet import contract
from preprocess_service.stream.alerts import Window
from preprocess_service.stream.state import ReadyWindow
from preprocess_service.triton_client import TritonClient


async def score_windows(
    triton: TritonClient, ready: list[ReadyWindow], request_id: str
) -> tuple[list[Window], str]:
    """(a scored Window per ready window, the ensemble version that answered); raises as TritonClient."""
    inputs = {k: np.concatenate([w.inputs[k] for w in ready]) for k in ready[0].inputs}
    result = await triton.infer(inputs, request_id=request_id)
    out = result.outputs
    scored = []
    for row, w in enumerate(ready):
        score = float(out[contract.SCORE.name][row, 0])
        low, high = (float(v) for v in out[contract.INTERVAL.name][row])
        audio_w, visual_w = (float(v) for v in out[contract.MODALITY_WEIGHTS.name][row])
        scored.append(
            Window(w.index, w.start_s, w.end_s, score, low, high, contract.level_of(score), audio_w, visual_w)
        )
    return scored, result.model_version
