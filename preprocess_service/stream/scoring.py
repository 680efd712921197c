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
    triton: TritonClient, ready: list[ReadyWindow], stream_id: str
) -> tuple[list[Window | Exception], str | None]:
    """(per ready window its scored Window, or the exception its call raised; the ensemble version that
    answered, None when no call did). One refused call fails its own window only: a batch thrown away whole
    turned one overload refusal in a backlog into a gap that restarted the pain run (alerts.py)."""
    calls = (triton.infer(w.inputs, request_id=f"{stream_id}-{w.index}") for w in ready)  # one id a window
    results = await asyncio.gather(*calls, return_exceptions=True)
    scored: list[Window | Exception] = []
    version = None
    for w, result in zip(ready, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):  # cancellation and the like are not a window's failure
                raise result
            scored.append(result)
            continue
        version = result.model_version
        out = result.outputs
        score = float(out[contract.SCORE.name][0, 0])
        low, high = (float(v) for v in out[contract.INTERVAL.name][0])
        audio_w, visual_w = (float(v) for v in out[contract.MODALITY_WEIGHTS.name][0])
        level = contract.level_of(score)
        read = _read(w, out)
        scored.append(Window(w.index, w.start_s, w.end_s, score, low, high, level, audio_w, visual_w, read))
    return scored, version


def _read(window: ReadyWindow, outputs: dict) -> float | None:
    """The window's P(adult) when the stream named no age group and the fusion read one (fusion 16 on), by
    the clip answer's rule (`aggregate.adult_probability`: none without a modality or a fitted head)."""
    p = outputs.get(contract.ADULT_PROBABILITY.name)
    if p is None or int(window.inputs[contract.AGE_GROUP.name][0, 0]) != contract.UNKNOWN_AGE:
        return None
    return adult_probability(p[:1], outputs[contract.MODALITY_WEIGHTS.name][:1])
