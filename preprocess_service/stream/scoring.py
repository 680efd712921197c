"""Completed windows → the ensemble: the same Triton call as clip scoring, one per window, all at once.

Each window carries its own 3 s of sound (a one-window clip in the ensemble's layout); the calls go out
together, so Triton's dynamic batcher runs the ready windows as one batch."""

from __future__ import annotations

import asyncio

from avpenet import contract
from avpenet.aggregate import adult_probability
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
        level = contract.level_of(score)
        read = _read(w, out)
        scored.append(Window(w.index, w.start_s, w.end_s, score, low, high, level, audio_w, visual_w, read))
    return scored, results[-1].model_version


def _read(window: ReadyWindow, outputs: dict) -> float | None:
    """The window's P(adult) when the stream named no age group and the fusion read one (fusion 16 on), by
    the clip answer's rule (`aggregate.adult_probability`: none without a modality or a fitted head)."""
    p = outputs.get(contract.ADULT_PROBABILITY.name)
    if p is None or int(window.inputs[contract.AGE_GROUP.name][0, 0]) != contract.UNKNOWN_AGE:
        return None
    return adult_probability(p[:1], outputs[contract.MODALITY_WEIGHTS.name][:1])
