"""What docs/INTEGRATION.md (*Clip length and windows*) tells an integrator about short clips holds: no
minimum length, a clip under 3 s is one zero-padded window (its face read from the frames it has, the slots
past its end masked), a 10-s clip 8 windows, a 3.1-s clip one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpenet import contract
from avpenet.features import audio, windows

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("seconds", "count"), [(0.01, 1), (0.5, 1), (3.0, 1), (3.1, 1), (3.2, 2), (10.0, 8)])
def test_window_counts_are_those_documented(seconds, count):
    assert audio.window_count(round(seconds * contract.SAMPLE_RATE)) == count


def test_a_half_second_clip_is_one_window_zero_padded_after_its_end():
    wave = audio.windows(np.ones(contract.SAMPLE_RATE // 2, dtype="float32") * 0.1)
    assert wave.shape == (1, contract.WINDOW_SAMPLES)
    assert not wave[0, contract.SAMPLE_RATE // 2 :].any() and wave[0, : contract.SAMPLE_RATE // 2].all()
    doc = (ROOT / "docs" / "INTEGRATION.md").read_text()
    assert "There is no minimum length" in doc and "its sound zero-padded after its end to 3 s" in doc


def test_a_one_second_video_is_one_window_whose_frame_slots_past_its_end_are_masked():
    n = contract.FPS  # one second of frames, every one with a face
    feats = np.ones((n, contract.VISUAL_FEATURE_DIM), np.float32)
    inputs = windows.inputs_from_features(None, feats, np.ones(n, np.float32), "adult")
    mask = inputs[contract.FRAME_MASK.name]
    assert mask.shape == (1, contract.FRAMES_PER_WINDOW)
    assert mask[0, :n].all() and not mask[0, n:].any()
    assert not inputs[contract.VISUAL_FEATURES.name][0, n:].any()  # zeros, not the last frame repeated
    doc = (ROOT / "docs" / "INTEGRATION.md").read_text()
    assert "the window's frame slots past the clip's end are masked" in " ".join(doc.split())
