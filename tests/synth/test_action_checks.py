"""avpenet.synth.action_checks: an action's reading fails when a step falls or the whole rise is too small
(the render tests and `python -m avpenet.synth.action_checks --skin-tone N` both judge by it)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from avpenet import contract
from avpenet.synth import action_checks


def _tracks(blink: list[float]) -> list:
    """Fake tracks whose eyeBlink (both eyes) reads `blink` at LEVELS."""
    out = []
    for value in blink:
        b = np.zeros(contract.N_BLENDSHAPES, np.float32)
        for name in ("eyeBlinkLeft", "eyeBlinkRight"):
            b[contract.BLENDSHAPE_NAMES.index(name)] = value
        out.append(SimpleNamespace(blendshapes=b[None]))
    return out


@pytest.mark.parametrize(
    ("blink", "faults"),
    [
        ([0.02, 0.20, 0.45], []),
        ([0.02, 0.20, 0.19], []),  # a dip within STEP_SLACK is tracker noise
        ([0.02, 0.20, 0.12], ["falls by more than 0.02 on a step"]),
        ([0.02, 0.03, 0.05], ["rises 0.030 < 0.05"]),
    ],
)
def test_a_falling_step_or_a_small_rise_fails(blink: list[float], faults: list[str]) -> None:
    what, values, found = action_checks.action_reading("astronaut", "AU43", _tracks(blink))
    assert what == "eyeBlink" and np.allclose(values, blink) and found == faults


def test_a_lip_movement_the_blendshape_misses_is_read_on_the_tracked_geometry() -> None:
    def track(gap: float) -> SimpleNamespace:
        landmarks = np.zeros((1, contract.N_LANDMARKS, 3), np.float32)
        landmarks[0, 468, 0], landmarks[0, 473, 0] = 0.4, 0.6  # irises 0.2 apart: 100 px at 500 px
        landmarks[0, 13, 1], landmarks[0, 14, 1] = 0.5, 0.5 + gap  # the inner lips
        return SimpleNamespace(landmarks=landmarks, image_size=np.array([500, 500]))

    what, values, faults = action_checks.action_reading(
        "grace_hopper", "talking", [track(g) for g in (0, 0.002, 0.008)]
    )
    assert (
        what.startswith("geometry 13-14") and np.allclose(values, [0.0, 0.01, 0.04], atol=1e-6) and not faults
    )
    _, _, faults = action_checks.action_reading(
        "grace_hopper", "talking", [track(g) for g in (0, 0.001, 0.002)]
    )
    assert faults == ["rises 0.010 < 0.015"]
