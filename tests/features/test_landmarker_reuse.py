"""Clips are tracked by landmarkers reused from a per-process pool, exactly as by new ones.

A reused VIDEO-mode landmarker carries the previous clip's face region and landmark smoothing into the next
clip; one frame without a face between clips (`FaceTracker.reset`) drops both. mediapipe's smoothing takes a
first sample at timestamp 0 for no sample, which a landmarker that already ran cannot repeat; so every clip
starts at tracker.FIRST_TIMESTAMP_MS, and from there a reset landmarker and a new one give the same track,
bit for bit. Creating one costs ~40-50 ms of CPU per clip; the reset, one empty frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpenet import contract
from avpenet.features import tracker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def clips() -> dict[str, list[np.ndarray]]:
    return {
        name: list(tracker.iter_video_frames((EXAMPLES / f"{name}.mp4").read_bytes()))
        for name in ("neonate-cry-high", "neonate-calm-low")
    }


def _fresh(frames: list[np.ndarray], first_ts_ms: int = tracker.FIRST_TIMESTAMP_MS):
    with tracker.FaceTracker() as face_tracker:
        face_tracker._next_ts_ms = first_ts_ms
        return face_tracker.track_frames(frames)


def _same(a, b) -> None:
    for key in ("landmarks", "blendshapes", "face_present", "head_pose"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


def test_a_pooled_landmarker_tracks_each_clip_as_a_new_one(clips):
    cry, calm = clips["neonate-cry-high"], clips["neonate-calm-low"]
    tracker._pool.clear()
    with tracker.pooled() as first:
        first.track_frames(calm)  # ends with the face found: its region and smoothing are live
    with tracker.pooled() as second:
        assert second is first  # reused, not created
        reused = second.track_frames(cry)
    assert reused.face_present.all()
    _same(reused, _fresh(cry))
    with tracker.pooled() as third:  # and again, after a clip that ended with the face found
        assert third is first
        _same(third.track_frames(calm), _fresh(calm))


def test_a_clip_started_at_timestamp_zero_is_tracked_differently(clips):
    """Why clips start at FIRST_TIMESTAMP_MS: from 0 the smoothing starts a frame later, and a landmarker
    that has already run could never give that track."""
    cry = clips["neonate-cry-high"]
    from_zero, used = _fresh(cry, first_ts_ms=0), _fresh(cry)
    lm = np.abs(from_zero.landmarks - used.landmarks).max(axis=(1, 2))
    bs = np.abs(from_zero.blendshapes - used.blendshapes).max(axis=1)
    assert lm[0] == 0 and bs[0] == 0  # the first frame is detected alike
    assert 0 < lm.max() < 3e-3 and 0 < bs.max() < 0.1  # then the smoothing differs
    assert lm[3 * contract.FPS :].max() < 1e-4  # and the difference fades within seconds


def test_a_clip_that_fails_closes_its_landmarker():
    tracker._pool.clear()
    with pytest.raises(RuntimeError), tracker.pooled() as failing:
        raise RuntimeError("decode failed mid-clip")
    assert failing._landmarker is None
    with tracker.pooled() as next_one:
        assert next_one is not failing
