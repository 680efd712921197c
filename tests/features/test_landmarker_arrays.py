"""The FaceLandmarker's answer read as arrays (landmarker_arrays) equals mediapipe's public result, bitwise.

The tracker reads each VIDEO-mode frame's result straight from mediapipe's C struct instead of through 478
Python objects per face. Both reads are run here on the same frames by two fresh trackers: every landmark,
blendshape and head pose must be the same float32, the largest of two faces picked alike, a blank frame
empty in both. And the installed mediapipe must be one the fast read understands, or the saving is silently
gone.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from avpenet import contract
from avpenet.features import landmarker_arrays, tracker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _frames() -> list[np.ndarray]:
    """Every second frame of an example clip, a blank frame, then frames holding a second, smaller face."""
    frames = list(tracker.iter_video_frames((EXAMPLES / "neonate-cry-high.mp4").read_bytes()))[::2]
    h, w = frames[0].shape[:2]
    two = []
    for f in frames[:4]:
        small = np.zeros_like(f)
        small[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = f[::2, ::2][: h // 2, : w // 2]
        two.append(np.ascontiguousarray(np.concatenate([small, f], axis=1)))
    return [*frames, np.zeros_like(frames[0]), *two]


def _track(frames: list[np.ndarray], fast: bool, monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as m:
        m.setattr(landmarker_arrays, "FAST", fast)
        with tracker.FaceTracker(num_faces=2) as face_tracker:
            return face_tracker.track_frames(frames)


def test_the_installed_mediapipe_is_read_as_arrays() -> None:
    assert landmarker_arrays.FAST, "mediapipe's result structs changed: every frame now takes the slow read"


def test_arrays_equal_the_public_result_on_real_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _frames()
    fast, public = _track(frames, True, monkeypatch), _track(frames, False, monkeypatch)
    for key in ("landmarks", "blendshapes", "face_present", "head_pose"):
        np.testing.assert_array_equal(getattr(fast, key), getattr(public, key), err_msg=key)
    present = fast.face_present
    assert (
        present[: len(frames) - 5].mean() > 0.8 and not present[-5]
    )  # faces found; the blank frame has none
    assert present[-4:].all()
    # of the two faces, the larger (right-hand, full-size) one was kept: its x lies in the right half
    assert (np.median(fast.landmarks[-4:, :, 0], axis=1) > 0.5).all()
    assert fast.blendshapes[present].any() and np.abs(fast.head_pose[present]).sum() > 0


def test_without_the_binding_the_public_call_answers() -> None:
    point = SimpleNamespace(x=0.25, y=0.5, z=-0.125)
    result = SimpleNamespace(
        face_landmarks=[[point] * contract.N_LANDMARKS],
        face_blendshapes=[[SimpleNamespace(category_name="jawOpen", score=0.75)]],
        facial_transformation_matrixes=[np.eye(4, dtype=np.float32)],
    )
    calls = []

    class Landmarker:  # no `_lib`: another mediapipe
        def detect_for_video(self, image, timestamp_ms):
            calls.append(timestamp_ms)
            return result

    faces = landmarker_arrays.detect_for_video(Landmarker(), object(), 100)
    assert calls == [100]
    frame = tracker._frame_from_faces(faces)
    assert frame.present and frame.landmarks.shape == (contract.N_LANDMARKS, 3)
    assert frame.blendshapes[contract.BLENDSHAPE_NAMES.index("jawOpen")] == np.float32(0.75)
    np.testing.assert_array_equal(frame.head_pose, np.eye(4))


def test_the_largest_face_is_kept_and_malformed_ones_are_none() -> None:
    def face(scale: float) -> np.ndarray:
        return np.random.default_rng(0).uniform(0, scale, (contract.N_LANDMARKS, 3)).astype(np.float32)

    small, large = face(0.2), face(0.6)
    pick = tracker._frame_from_faces(landmarker_arrays.Faces([small, large, large.copy()], [], []))
    assert pick.landmarks is large  # the first of two equal faces, as mediapipe's order gives them
    nan_face = large.copy()
    nan_face[0, 0] = np.nan  # no extent: never preferred to a face with one
    assert tracker._frame_from_faces(landmarker_arrays.Faces([nan_face, small], [], [])).landmarks is small
    assert not tracker._frame_from_faces(landmarker_arrays.Faces([small[:10]], [], [])).present
    assert not tracker._frame_from_faces(landmarker_arrays.Faces([], [], [])).present
