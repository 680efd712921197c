"""FaceTrack: the per-frame face-tracker output (the synth `.npz` format and what the tracker returns).

One validated type crosses every boundary (synth → disk → training, upload → gateway → features), so a bad
landmarks file fails here with a reason an integrator can act on instead of deep inside the model.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia
from avpenet.features.memfile import Buffer, ViewFile

# Sanity bounds for an uploaded track: a 10-minute clip at FPS, images up to 16k pixels a side.
MAX_TRACK_FRAMES = 10 * 60 * contract.FPS
MAX_IMAGE_SIDE = 16_384
# Normalised landmark coordinates may leave [0, 1] when the face is partly off-frame, but not by much.
LANDMARK_ABS_LIMIT = 10.0


@dataclass
class FaceTrack:
    """Face-tracker output for T frames sampled at contract.FPS (arrays of contract.TRACK_ARRAYS)."""

    landmarks: np.ndarray  # [T, N_LANDMARKS, 3] float32, normalised image coordinates
    blendshapes: np.ndarray  # [T, N_BLENDSHAPES] float32, in contract.BLENDSHAPE_NAMES order
    face_present: np.ndarray  # [T] bool
    head_pose: np.ndarray  # [T, 4, 4] float32, facial transformation matrix
    image_size: np.ndarray  # [2] int32 (width, height)

    @property
    def n_frames(self) -> int:
        return int(self.face_present.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_frames / contract.FPS

    @classmethod
    def empty(cls, n_frames: int, image_size: tuple[int, int] = (0, 0)) -> FaceTrack:
        """A track of n_frames with no face found (zeros, face_present False)."""
        return cls(
            landmarks=np.zeros((n_frames, contract.N_LANDMARKS, 3), np.float32),
            blendshapes=np.zeros((n_frames, contract.N_BLENDSHAPES), np.float32),
            face_present=np.zeros((n_frames,), np.bool_),
            head_pose=np.zeros((n_frames, 4, 4), np.float32),
            image_size=np.asarray(image_size, np.int32),
        )

    @classmethod
    def concat(cls, tracks: list[FaceTrack]) -> FaceTrack:
        """Frames of several tracks one after the other, with the image_size of the first track that has one
        (both sides above 0): a track padded with faceless frames of unknown size (0x0, e.g. a stream's frames
        before its first decoded image) reads its faces at their own size, not squeezed to a 1x1 square."""
        if not tracks:
            return cls.empty(0)
        sized = next((t for t in tracks if np.all(t.image_size > 0)), tracks[0])
        return cls(
            landmarks=np.concatenate([t.landmarks for t in tracks]),
            blendshapes=np.concatenate([t.blendshapes for t in tracks]),
            face_present=np.concatenate([t.face_present for t in tracks]),
            head_pose=np.concatenate([t.head_pose for t in tracks]),
            image_size=sized.image_size.copy(),
        )

    def head(self, n_frames: int) -> FaceTrack:
        """The first `n_frames` frames (all of them when there are fewer)."""
        if self.n_frames <= n_frames:
            return self
        per_frame = {
            k: getattr(self, k)[:n_frames]
            for k, (shape, _) in contract.TRACK_ARRAYS.items()
            if shape[0] == "T"
        }
        return FaceTrack(**per_frame, image_size=self.image_size.copy())

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def save_npz(self, path: str | os.PathLike) -> None:
        """Write the arrays (compressed) under their contract names; loads with allow_pickle=False."""
        self.validate()
        np.savez_compressed(path, **self.arrays())

    def to_npz_bytes(self) -> bytes:
        """The upload form: uncompressed, which the gateway parses in a third of the CPU of a compressed
        one for ~9% more bytes (preprocess_service/README.md, *HTTP*)."""
        buf = io.BytesIO()
        self.validate()
        np.savez(buf, **self.arrays())
        return buf.getvalue()

    @classmethod
    def load_npz(cls, source: str | os.PathLike | Buffer, *, max_frames: int | None = None) -> FaceTrack:
        """Read and validate a track from a path or in-memory bytes.

        Array headers are checked before anything is decompressed, so a tiny file that would inflate to
        gigabytes is refused cheaply. Raises UndecodableMedia (not an npz, missing/wrong-shaped/non-finite
        arrays) or TooLarge (more than max_frames frames, default MAX_TRACK_FRAMES).
        """
        limit = MAX_TRACK_FRAMES if max_frames is None else max_frames
        if isinstance(source, bytes | bytearray | memoryview):
            if len(source) == 0:
                raise UndecodableMedia("landmarks file is empty; send numpy savez output")
            handle: ViewFile | Path = ViewFile(source)  # read where it lies: no copy of the upload
        else:
            handle = Path(source)
        try:
            with zipfile.ZipFile(handle) as zf:
                arrays = _read_members(zf, limit)
        except (UndecodableMedia, TooLarge):
            raise
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 (zipfile, zlib and numpy's header parser raise many types)
            # Corrupt members raise zlib.error, SyntaxError or tokenize.TokenError from numpy's header parser
            # and more: for untrusted bytes every one of them means "not a readable npz", never a 500.
            raise UndecodableMedia(
                f"landmarks file is not a readable .npz ({type(exc).__name__}); send numpy savez output "
                f"with arrays {', '.join(contract.TRACK_ARRAYS)}"
            ) from None
        track = cls._coerce(arrays)
        track.validate(max_frames=limit)
        if np.any(track.face_present) and not np.all(track.image_size > 0):
            raise UndecodableMedia(UNKNOWN_IMAGE_SIZE.format(size=track.image_size.tolist()))
        return track

    @classmethod
    def _coerce(cls, arrays: dict[str, np.ndarray]) -> FaceTrack:
        out = {}
        for key, (_, dtype) in contract.TRACK_ARRAYS.items():
            arr = arrays[key]
            if arr.dtype.kind not in "biuf":
                raise UndecodableMedia(f"array {key!r} has dtype {arr.dtype}; expected {np.dtype(dtype)}")
            if dtype is np.bool_ and arr.dtype.kind != "b" and not np.all(np.isin(arr, (0, 1))):
                raise UndecodableMedia(f"array {key!r} must be boolean (0/1)")
            out[key] = arr.astype(dtype, copy=False)
        return cls(**out)

    def validate(self, *, max_frames: int = MAX_TRACK_FRAMES) -> None:
        """Raise UndecodableMedia unless every array has its contract shape, dtype and finite values."""
        t = self.n_frames if self.face_present.ndim == 1 else -1
        if t < 0:
            raise UndecodableMedia(f"face_present must be 1-D [T]; got shape {self.face_present.shape}")
        if t > max_frames:
            raise TooLarge(f"track has {t} frames; the limit is {max_frames}")
        for key, (shape, dtype) in contract.TRACK_ARRAYS.items():
            arr = getattr(self, key)
            want = tuple(t if d == "T" else d for d in shape)
            if arr.shape != want:
                raise UndecodableMedia(f"array {key!r} has shape {arr.shape}; expected {want} (T = {t})")
            if arr.dtype != np.dtype(dtype):
                raise UndecodableMedia(f"array {key!r} has dtype {arr.dtype}; expected {np.dtype(dtype)}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise UndecodableMedia(f"array {key!r} contains NaN or Inf values; send finite numbers")
        if np.any(np.abs(self.landmarks) > LANDMARK_ABS_LIMIT):
            raise UndecodableMedia(
                f"landmarks out of range (|value| > {LANDMARK_ABS_LIMIT}); expected normalised image "
                "coordinates"
            )
        if np.any(self.image_size < 0) or np.any(self.image_size > MAX_IMAGE_SIDE):
            raise UndecodableMedia(
                f"image_size {self.image_size.tolist()} is not a plausible (width, height) in pixels"
            )


# Landmarks are fractions of the frame's width and height: a face is aligned (and its features measured) in
# pixels, so without the frame's size the face is squeezed into a square; a portrait 720x1280 track scored
# 7.07 from the face alone instead of 3.75 that way. Every track the project makes carries its size; an
# upload must too.
UNKNOWN_IMAGE_SIZE = (
    "landmarks .npz has image_size {size}: send the (width, height) in pixels of the frames the landmarks "
    "were tracked on (landmarks are fractions of each side; without the frame's shape the face is distorted)"
)


# numpy parses each .npy header with ast.literal_eval. CPython before 3.12 keeps the AST builder's recursion
# depth in interpreter-wide state, so two threads parsing at once (the gateway decodes concurrent uploads on
# worker threads) can fail with "SystemError: AST constructor recursion depth mismatch": a valid landmarks
# file was then refused as unreadable (422), about once in a thousand requests under load. Header parses are
# tiny; serialising them costs nothing measurable.
_HEADER_LOCK = threading.Lock()


def _read_members(zf: zipfile.ZipFile, max_frames: int) -> dict[str, np.ndarray]:
    """Read the contract arrays of an open npz, refusing oversized or pickled arrays from their headers."""
    names = {n.removesuffix(".npy"): n for n in zf.namelist()}
    missing = [k for k in contract.TRACK_ARRAYS if k not in names]
    if missing:
        raise UndecodableMedia(
            f"landmarks .npz lacks array(s) {', '.join(missing)}; expected {', '.join(contract.TRACK_ARRAYS)}"
        )
    out = {}
    for key, (shape, _) in contract.TRACK_ARRAYS.items():
        per_frame = int(np.prod([d for d in shape if d != "T"], dtype=np.int64))
        budget = (max_frames * per_frame if "T" in shape else per_frame) * 8  # bytes at most (8-byte items)
        with zf.open(names[key]) as fh:
            version = np.lib.format.read_magic(fh)
            with _HEADER_LOCK:  # one header parse at a time in this process (see _HEADER_LOCK)
                if version == (1, 0):
                    arr_shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    arr_shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            if dtype.hasobject:
                raise UndecodableMedia(f"array {key!r} holds Python objects; send numeric arrays")
            if "T" in shape and len(arr_shape) >= 1 and arr_shape[0] > max_frames:
                raise TooLarge(
                    f"landmarks file has {arr_shape[0]} frames; the limit is {max_frames} "
                    f"({max_frames / contract.FPS:.0f} s at {contract.FPS} fps)"
                )
            if int(np.prod(arr_shape, dtype=np.int64)) * dtype.itemsize > budget:
                raise UndecodableMedia(f"array {key!r} has shape {arr_shape}; expected {shape}")
            out[key] = _read_data(fh, arr_shape, bool(fortran), dtype)
    return out


def _read_data(fh, shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    """The array data after its header, as `np.lib.format.read_array` reads it (same bytes, same writable
    array, ValueError at a short read), without opening the member again and parsing its header twice."""
    count = int(np.prod(shape, dtype=np.int64))
    size = count * dtype.itemsize
    array = np.ndarray(count, dtype=dtype)  # as numpy does: also right for empty and zero-width dtypes
    if size:
        data = fh.read(size)
        if len(data) != size:
            raise ValueError(f"EOF: reading array data, expected {size} bytes got {len(data)}")
        array[:] = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)
