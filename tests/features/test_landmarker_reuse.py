"""Why the FeatureExtractor creates a FaceLandmarker per clip instead of reusing one (a pool): measured.

A reused VIDEO-mode landmarker carries the previous clip's face region and landmark smoothing into the next
clip. One frame without a face between clips resets both: the clip is then tracked exactly as by a fresh
landmarker whose first timestamp is not 0. But `FaceTracker` (training's and serving's) starts at 0, and
mediapipe's landmark smoothing treats a first sample at timestamp 0 as no sample (the next frame starts the
filter), so a landmarker that already ran cannot reproduce it: landmarks differ by up to ~1.4e-3 (normalised
image coordinates) and blendshapes by up to ~0.04 over the first ~2 s. Pooling would therefore change what
serving sees against what training saw, for a saving of one landmarker creation (~30-40 ms CPU per clip, of
~650 ms for a 3-s clip). Slow: run with `pytest -m slow tests/features/test_landmarker_reuse.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpenet import contract
from avpenet.features import tracker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.slow


def frames(name: str) -> list[np.ndarray]:
    return list(tracker.iter_video_frames((EXAMPLES / name).read_bytes()))


def track(clip: list[np.ndarray], *, first_ts_ms: int = 0, before: list[np.ndarray] | None = None):
    with tracker.FaceTracker() as face_tracker:
        if before is not None:  # a pooled landmarker: another clip, then one frame without a face
            face_tracker.track_frames(before)
            face_tracker.track_frames([np.zeros_like(clip[0])])
        else:
            face_tracker._next_ts_ms = first_ts_ms
        return face_tracker.track_frames(clip)


def test_a_reset_landmarker_equals_a_fresh_one_but_not_one_started_at_timestamp_zero():
    clip, other = frames("neonate-cry-high.mp4"), frames("neonate-calm-low.mp4")
    pooled = track(clip, before=other)
    fresh_later = track(clip, first_ts_ms=1000)
    np.testing.assert_array_equal(pooled.landmarks, fresh_later.landmarks)
    np.testing.assert_array_equal(pooled.blendshapes, fresh_later.blendshapes)

    as_trained = track(clip)  # what `avpenet features` and the gateway compute
    lm = np.abs(as_trained.landmarks - pooled.landmarks).max(axis=(1, 2))
    bs = np.abs(as_trained.blendshapes - pooled.blendshapes).max(axis=1)
    assert lm[0] == 0 and bs[0] == 0  # the first frame is detected alike
    assert 0 < lm.max() < 3e-3 and 0 < bs.max() < 0.1  # the smoothing starts one frame later
    settled = 3 * contract.FPS
    assert lm[settled:].max() < 1e-4  # and the difference fades within seconds
