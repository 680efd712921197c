"""A FaceLandmarker's answer for one frame as arrays, read from mediapipe's C result without a Python object
per point.

mediapipe 1.x answers `FaceLandmarker.detect_for_video` through its C API: the result arrives as a C struct,
and `FaceLandmarkerResult.from_ctypes` turns each 478-point face into 478 `NormalizedLandmark` dataclasses and
52 `Category` objects, which the tracker then turned back into arrays: about 1.4 ms of a 10.8 ms frame on the
build machine. Here the same C call is made through the landmarker's own binding (the same serial dispatcher,
the same error checks) and each face's points are copied out in one block, the same float32 values bit for
bit (tests/features/test_landmarker_arrays.py compares both reads on real frames). The video path's feature
code then costs 5-10% less CPU per second of video (`python -m loadtests.tracking_cpu`; docs/BENCHMARKS.md).

The binding and the structs are mediapipe's, not its documented API. `FAST` says whether the installed
mediapipe has them as this module reads them; where it does not (another version), `detect_for_video` takes
the public call and converts its objects, with the same answers, at the old cost.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faces:
    """Every face found in one frame, in the landmarker's order."""

    landmarks: list[np.ndarray]  # per face [n, 3] float32: x, y normalised to the image, z
    blendshapes: list[tuple[tuple[str | None, ...], np.ndarray]]  # per face (category names, scores float32)
    matrixes: list[np.ndarray]  # per face the facial transformation matrix as mediapipe gives it


def faces_of_result(result) -> Faces:
    """The public `FaceLandmarkerResult` (IMAGE mode, or where `FAST` is False) as `Faces`."""
    return Faces(
        landmarks=[np.array([(p.x, p.y, p.z) for p in face], np.float32) for face in result.face_landmarks],
        blendshapes=[
            (tuple(c.category_name for c in cats), np.array([c.score for c in cats], np.float32))
            for cats in result.face_blendshapes or []
        ],
        matrixes=list(result.facial_transformation_matrixes or []),
    )


def _structs():
    """mediapipe's result structs, or None when they are not laid out as this module reads them."""
    try:
        from mediapipe.tasks.python.components.containers import category_c, landmark_c
        from mediapipe.tasks.python.vision import face_landmarker
    except ImportError:
        return None
    point, category = landmark_c.MpNormalizedLandmarkC, category_c.MpCategoryC
    result = getattr(face_landmarker, "MpFaceLandmarkerResultC", None)
    point_fields = {name: kind for name, kind in point._fields_}
    category_fields = {name: kind for name, kind in category._fields_}
    result_fields = {name for name, *_ in getattr(result, "_fields_", [])}
    if not (
        all(point_fields.get(axis) is ctypes.c_float for axis in "xyz")
        and category_fields.get("score") is ctypes.c_float
        and category_fields.get("category_name") is ctypes.c_char_p
        and {"face_landmarks", "face_blendshapes", "facial_transformation_matrixes"} <= result_fields
    ):
        return None
    return result, point, category


_STRUCTS = _structs()
FAST = _STRUCTS is not None
if FAST:
    _RESULT, _POINT, _CATEGORY = _STRUCTS
    _POINT_XYZ = np.dtype(
        {
            "names": ["x", "y", "z"],
            "formats": ["<f4"] * 3,
            "offsets": [_POINT.x.offset, _POINT.y.offset, _POINT.z.offset],
            "itemsize": ctypes.sizeof(_POINT),
        }
    )
    _SCORE = np.dtype(
        {
            "names": ["score"],
            "formats": ["<f4"],
            "offsets": [_CATEGORY.score.offset],
            "itemsize": ctypes.sizeof(_CATEGORY),
        }
    )


def _block(pointer, count: int, dtype: np.dtype) -> np.ndarray:
    """`count` structs at `pointer` copied out as a structured array (one copy, no per-item objects)."""
    return (
        np.frombuffer(ctypes.string_at(pointer, count * dtype.itemsize), dtype)
        if count
        else np.empty(0, dtype)
    )


def _read(result) -> Faces:
    landmarks, blendshapes, matrixes = [], [], []
    for i in range(result.face_landmarks_count):
        face = result.face_landmarks[i]
        xyz = _block(face.landmarks, face.landmarks_count, _POINT_XYZ)
        landmarks.append(np.stack([xyz["x"], xyz["y"], xyz["z"]], axis=1))
    for i in range(result.face_blendshapes_count):
        cats = result.face_blendshapes[i]
        raw = (cats.categories[j].category_name for j in range(cats.categories_count))
        names = tuple(name.decode("utf-8") if name else None for name in raw)
        blendshapes.append((names, _block(cats.categories, cats.categories_count, _SCORE)["score"].copy()))
    for i in range(result.facial_transformation_matrixes_count):
        matrixes.append(result.facial_transformation_matrixes[i].to_numpy())
    return Faces(landmarks, blendshapes, matrixes)


def detect_for_video(landmarker, image, timestamp_ms: int) -> Faces:
    """`landmarker.detect_for_video(image, timestamp_ms)` (VIDEO mode) as `Faces`; raises what it raises."""
    lib = getattr(landmarker, "_lib", None)
    if not FAST or lib is None or not hasattr(image, "_image_ptr") or not hasattr(landmarker, "_handle"):
        return faces_of_result(landmarker.detect_for_video(image, timestamp_ms))
    result = _RESULT()
    # `image` is held by the caller for the whole call: its _image_ptr is freed with it.
    lib.MpFaceLandmarkerDetectForVideo(
        landmarker._handle, image._image_ptr, None, timestamp_ms, ctypes.byref(result)
    )
    try:
        return _read(result)
    finally:
        lib.MpFaceLandmarkerCloseResult(ctypes.byref(result))
