"""FaceTrack: npz round trip and the validation an uploaded landmarks file goes through."""

from __future__ import annotations

import io

import numpy as np
import pytest

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia
from avpenet.features.track import FaceTrack


def _track(n: int = 12, seed: int = 0) -> FaceTrack:
    rng = np.random.default_rng(seed)
    t = FaceTrack.empty(n, (640, 480))
    t.landmarks[:] = rng.uniform(0.2, 0.8, t.landmarks.shape)
    t.blendshapes[:] = rng.uniform(0, 1, t.blendshapes.shape)
    t.face_present[:] = rng.uniform(size=n) > 0.2
    t.head_pose[:] = np.eye(4, dtype=np.float32)
    return t


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_empty_matches_contract():
    t = FaceTrack.empty(7, (320, 240))
    assert t.n_frames == 7
    for key, (shape, dtype) in contract.TRACK_ARRAYS.items():
        arr = getattr(t, key)
        assert arr.dtype == np.dtype(dtype), key
        assert arr.shape == tuple(7 if d == "T" else d for d in shape), key
    assert not t.face_present.any()


def test_round_trip_path_and_bytes(tmp_path):
    t = _track()
    t.save_npz(tmp_path / "a.npz")
    for loaded in (FaceTrack.load_npz(tmp_path / "a.npz"), FaceTrack.load_npz(t.to_npz_bytes())):
        for key in contract.TRACK_ARRAYS:
            np.testing.assert_array_equal(getattr(loaded, key), getattr(t, key))


def test_float64_and_int_flags_are_coerced():
    t = _track(4)
    arrays = {k: v.astype(np.float64) for k, v in t.arrays().items()}
    arrays["face_present"] = t.face_present.astype(np.int64)
    loaded = FaceTrack.load_npz(_npz(**arrays))
    assert loaded.landmarks.dtype == np.float32 and loaded.face_present.dtype == np.bool_
    np.testing.assert_array_equal(loaded.face_present, t.face_present)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda a: a.pop("blendshapes"), "lacks"),
        (lambda a: a.__setitem__("landmarks", a["landmarks"][:, :100]), "shape"),
        (lambda a: a.__setitem__("blendshapes", a["blendshapes"][:-1]), "shape"),
        (lambda a: a["landmarks"].__setitem__((0, 0, 0), np.nan), "NaN"),
        (lambda a: a["head_pose"].__setitem__((1, 0, 0), np.inf), "NaN"),
        (lambda a: a.__setitem__("face_present", np.full(a["face_present"].shape, 3)), "boolean"),
        (lambda a: a.__setitem__("landmarks", a["landmarks"].astype(str)), "dtype"),
        (lambda a: a["landmarks"].__setitem__((0, 0, 0), 1e9), "range"),
        (lambda a: a.__setitem__("image_size", np.array([-1, 5], np.int32)), "image_size"),
    ],
)
def test_bad_arrays_raise_undecodable(mutate, needle):
    arrays = {k: v.copy() for k, v in _track(6).arrays().items()}
    mutate(arrays)
    with pytest.raises(UndecodableMedia, match=needle):
        FaceTrack.load_npz(_npz(**arrays))


def test_a_track_with_a_face_needs_the_frame_size():
    """Landmarks are fractions of each side: without the frame's size the face would be aligned squeezed
    into a square (a portrait track's score moved by 3 points), so such an upload is refused."""
    arrays = {k: v.copy() for k, v in _track(6).arrays().items()}
    for size in ([0, 0], [640, 0]):
        arrays["image_size"] = np.array(size, np.int32)
        with pytest.raises(UndecodableMedia, match=r"image_size .*width, height"):
            FaceTrack.load_npz(_npz(**arrays))
    arrays["face_present"][:] = False  # no face to align: nothing is distorted, the visual part is masked
    assert FaceTrack.load_npz(_npz(**arrays)).n_frames == 6


@pytest.mark.parametrize("blob", [b"", b"garbage" * 10, b"PK\x03\x04" + bytes(40)])
def test_not_an_npz(blob):
    with pytest.raises(UndecodableMedia):
        FaceTrack.load_npz(blob)


def test_truncated_npz():
    blob = _track().to_npz_bytes()
    with pytest.raises(UndecodableMedia):
        FaceTrack.load_npz(blob[: len(blob) // 2])


def test_object_arrays_are_refused_without_unpickling():
    arrays = _track(3).arrays()
    arrays["blendshapes"] = np.array([object()] * 3, dtype=object)
    with pytest.raises(UndecodableMedia, match="objects"):
        FaceTrack.load_npz(_npz(**arrays))


def test_too_many_frames_refused_from_header():
    t = FaceTrack.empty(50)
    with pytest.raises(TooLarge):
        FaceTrack.load_npz(t.to_npz_bytes(), max_frames=20)
