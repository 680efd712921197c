"""Per-frame visual feature vector from a FaceTrack — the same function for training and serving.

Layout (contract.VISUAL_FEATURE_SEGMENTS, VISUAL_FEATURE_DIM = 201 columns; `contract.feature_slice(name)`):

- ``landmarks_xy`` (140): x, y of the 70 points of contract.LANDMARK_SUBSET (grouped jaw, brows, nose, eyes,
  mouth) in the canonical face frame, interleaved [x0, y0, x1, y1, ...]. Each frame's landmarks (in pixels,
  so the image aspect ratio is respected) are mapped by the least-squares similarity transform
  (Procrustes/Umeyama: translation + uniform scale + in-plane rotation) that best fits its STABLE_POINTS
  (eye corners, nose bridge) to the same points of the canonical template (`faceframe`: the neutral face
  the real FaceLandmarker reports on `skimage.data.astronaut()`, origin between the eyes, x along the eye
  line, y down, unit = inter-ocular distance, IOD). So values are O(1) and position, scale and roll are
  gone; yaw/pitch remain as shape changes and are given explicitly in ``head_pose``.
- ``blendshapes`` (52): the tracker's scores in contract.BLENDSHAPE_NAMES order, 0-1.
- ``au_proxies`` (6): contract.AU_NAMES. Blendshapes where they work on real faces (docs/ARCHITECTURE.md,
  Platform notes):
  AU4 = mean browDown, AU7 = mean eyeSquint (note its 0.1-0.5 neutral baseline), AU10 = mean mouthUpperUp.
  Geometry where blendshapes are blind (cheekSquint/noseSneer stay 0), measured on the 3-D landmarks
  rigidly aligned to the 3-D template (`align3d`, so yaw/pitch do not fake motion): AU6 = cheek points
  rising toward the lower lids, AU9 = nose wings rising toward the inner eye corners; each gap is divided
  by the eye-line-to-nose-tip height (so neonate proportions largely cancel) and reported as the change
  from the template's value, scaled so a 5 % IOD movement ≈ 1 (AU_GEOMETRY_GAIN; signed; remaining
  identity differences shift the zero point by a few tenths). AU43 = eye closure from lid distance:
  1 - (lid gap / eye width) / template ratio, clipped to [0, 1].
- ``head_pose`` (3): yaw, pitch, roll in radians from the rotation part of the tracker's 4×4 facial
  transformation matrix (R = Rz(roll) · Ry(yaw) · Rx(pitch)).

Mask: 1 where the frame is usable — a face was found, its inter-ocular distance is at least MIN_IOD_PX
pixels, at least MIN_IN_FRAME of the subset lies inside the image, |yaw| ≤ MAX_YAW, and the aligned shape is
plausible (mean distance of the aligned subset to the template ≤ MAX_SHAPE_ERROR IOD; catches tracker
failures, not identity or pose). When the image size is unknown (an uploaded track may carry 0 × 0) the
inter-ocular distance must be at least MIN_IOD_NORM of the frame instead. Landmarks that do not move are a
copied frame or a fabricated file, not a tracked face (real trackers jitter): a still run — at least
FROZEN_MIN_FRAMES consecutive present frames, each within FROZEN_TOLERANCE of the one before — is unusable,
except its first frame when a present frame precedes it (the last position tracked; the device repeated it).
A frame without a face ends a run, and a whole track that never moves is unusable in every frame. The rule is
per frame and reads at most CONTEXT_FRAMES (FROZEN_MIN_FRAMES - 1) frames on either side, so a window's mask
is the same whether the track comes whole (a clip, training) or window by window with that context (the
stream; `unsettled` says when later frames can no longer change it). Masked frames have all-zero features.
All values are finite float32.
`usable_frames` is this one check; the gateway refuses a clip with no audio and no usable frame (422),
whether its track came from the tracker or from an uploaded `.npz`.
Not detected here: a mask or pacifier over the mouth — mediapipe then hallucinates a plausible, still lower
face and its mouth blendshapes collapse; the model sees that in the features, the mask cannot.
"""

from __future__ import annotations

import functools

import numpy as np

from avpenet import contract
from avpenet.features.faceframe import (
    LEFT_EYE_INNER,
    LEFT_EYE_OUTER,
    RIGHT_EYE_INNER,
    RIGHT_EYE_OUTER,
    RIGID_INDEX,
    STABLE_INDEX,
    align3d_at,
    align_at,
    head_pose_angles,
    template,
    template3d,
)
from avpenet.features.track import FaceTrack

# mediapipe face-mesh indices (the subject's right eye is on the image left).
RIGHT_UPPER_LID, RIGHT_LOWER_LID, LEFT_UPPER_LID, LEFT_LOWER_LID = (159, 158, 160), (145, 144, 153), (
    386, 385, 387), (374, 373, 380)  # fmt: skip
RIGHT_CHEEK, LEFT_CHEEK = (50, 205), (280, 425)
RIGHT_NOSE_WING, LEFT_NOSE_WING = (129, 98), (358, 327)
NOSE_TIP = 4

AU_GEOMETRY_GAIN = 20.0  # a 5 % IOD movement → 1.0
MIN_IOD_PX = 8.0
MIN_IOD_NORM = 0.01  # of the frame width, when the image size is unknown (8 px of a 800 px frame)
FROZEN_MIN_FRAMES = contract.FPS  # a face exactly still for 1 s has not been tracked; real trackers jitter
FROZEN_TOLERANCE = 1e-6  # normalised units: far below any tracker's frame-to-frame noise (~1e-4)
CONTEXT_FRAMES = FROZEN_MIN_FRAMES - 1  # a frame's mask reads at most this many frames on either side
MIN_IN_FRAME = 0.8
MAX_YAW = np.deg2rad(50.0)  # beyond this one half of the face is hidden
MAX_SHAPE_ERROR = 0.6  # IOD; neonate proportions at 35° yaw reach ~0.35, at 50° ~0.5
FEATURE_LIMIT = 10.0  # features are clipped to ± this (they are O(1); guards against degenerate frames)

_BS = {name: i for i, name in enumerate(contract.BLENDSHAPE_NAMES)}
_SUBSET = np.asarray(contract.LANDMARK_SUBSET)
# The points _geometry measures: frame_features turns only these to the frontal template (`align3d_at`).
_GEOMETRY = np.unique(
    [RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER, NOSE_TIP, *RIGHT_UPPER_LID,
     *RIGHT_LOWER_LID, *LEFT_UPPER_LID, *LEFT_LOWER_LID, *RIGHT_CHEEK, *LEFT_CHEEK, *RIGHT_NOSE_WING,
     *LEFT_NOSE_WING]
)  # fmt: skip
# Every landmark frame_features reads: it gathers these ~100 of the 478 first, so a 60-s track (600 frames) is
# not converted, cleaned and scaled whole; each gathered point's arithmetic is the full array's, bit for bit.
_READ = np.unique(np.concatenate([_SUBSET, STABLE_INDEX, RIGID_INDEX, _GEOMETRY]))
_COL = np.full(contract.N_LANDMARKS, -1)  # landmark index -> its column among _READ
_COL[_READ] = np.arange(_READ.size)
_GEOMETRY_COL = np.full(contract.N_LANDMARKS, -1)  # landmark index -> its column among _GEOMETRY
_GEOMETRY_COL[_GEOMETRY] = np.arange(_GEOMETRY.size)


@functools.lru_cache(maxsize=1)
def _template_measures() -> dict[str, float]:
    t = template3d()[None]
    return {k: float(v[0]) for k, v in _geometry(t).items()}


def _geometry(p: np.ndarray, col: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-frame geometric measures of aligned landmarks [T, 478, 2 or 3] (IOD units, y down); with `col`,
    p holds only some landmarks and col maps a landmark index to its column."""
    at = (lambda idx: idx) if col is None else (lambda idx: col[idx])

    def y(idx) -> np.ndarray:
        return p[:, at(list(idx)), 1].mean(1)

    def eye_ratio(upper, lower, a, b) -> np.ndarray:
        gap = y(lower) - y(upper)
        width = np.linalg.norm(p[:, at(a)] - p[:, at(b)], axis=-1)
        return gap / np.maximum(width, 1e-6)

    # Vertical gaps are divided by the eye-line-to-nose-tip height, so face proportions (a neonate's short
    # mid-face) and head pitch cancel to first order; the ratio is scaled back to IOD at the template.
    eye_line = 0.5 * (p[:, at(RIGHT_EYE_INNER), 1] + p[:, at(LEFT_EYE_INNER), 1])
    nose_len = np.maximum(p[:, at(NOSE_TIP), 1] - eye_line, 1e-3)
    cheek_gap = 0.5 * ((y(RIGHT_CHEEK) - y(RIGHT_LOWER_LID)) + (y(LEFT_CHEEK) - y(LEFT_LOWER_LID)))
    nose_gap = 0.5 * (y(RIGHT_NOSE_WING) + y(LEFT_NOSE_WING)) - eye_line
    return {
        "nose_len": nose_len,
        "cheek_ratio": cheek_gap / nose_len,  # cheek below lower lid: shrinks when the cheeks rise (AU6)
        "nose_ratio": nose_gap / nose_len,  # nose wings below inner eye corners: shrinks with AU9
        "eye_ratio": 0.5
        * (
            eye_ratio(RIGHT_UPPER_LID, RIGHT_LOWER_LID, RIGHT_EYE_OUTER, RIGHT_EYE_INNER)
            + eye_ratio(LEFT_UPPER_LID, LEFT_LOWER_LID, LEFT_EYE_OUTER, LEFT_EYE_INNER)
        ),
    }


def _image_size(track: FaceTrack) -> tuple[np.ndarray, bool]:
    w, h = (int(v) for v in track.image_size)
    known = w > 0 and h > 0
    return np.array([w, h] if known else [1, 1], np.float64), known


def usable_frames(track: FaceTrack) -> np.ndarray:
    """[T] bool: frames whose face the model may use (see the module doc), for tracked and uploaded tracks."""
    if track.n_frames == 0:
        return np.zeros(0, bool)
    return _subset_view(track)[-1]


def _subset_view(
    track: FaceTrack,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(the read landmarks [T, len(_READ), 3] in pixels (z in units of width), the LANDMARK_SUBSET aligned
    to the template [T, len(subset), 2], the image size, the head pose [T, 3], usable [T]): what both
    usable_frames and frame_features need, so a clip is aligned once."""
    size, known = _image_size(track)
    # = np.nan_to_num(landmarks as float64) at the points read, the rest never converted.
    read = np.nan_to_num(np.asarray(track.landmarks)[:, _READ].astype(np.float64))
    xy = read[..., :2] * size
    aligned, px_per_iod = align_at(xy[:, _COL[STABLE_INDEX]], xy[:, _COL[_SUBSET]])
    pose = np.nan_to_num(head_pose_angles(np.nan_to_num(track.head_pose)))
    usable = _usable(track, read[..., :2], known, aligned, px_per_iod, pose)
    return read, aligned, size, pose, usable


def _usable(
    track: FaceTrack,
    lm: np.ndarray,
    known: bool,
    aligned: np.ndarray,
    px_per_iod: np.ndarray,
    pose: np.ndarray,
) -> np.ndarray:
    """usable_frames from the cleaned normalised landmarks at the points read ([T, len(_READ), 2]), the
    alignment of the LANDMARK_SUBSET and the head pose. The two checks over all 478 points (a face is
    present, a frame is still) read every point only of the frames the points read cannot decide."""
    present = np.asarray(track.face_present, bool) & _any_point_set(track, lm)
    err = np.mean(np.linalg.norm(aligned - template()[_SUBSET], axis=-1), axis=1)
    sub = lm[:, _COL[_SUBSET]]
    in_frame = np.mean(np.all((sub >= 0) & (sub <= 1), axis=-1), axis=1)
    usable = present & (in_frame >= MIN_IN_FRAME) & (np.abs(pose[:, 0]) <= MAX_YAW) & (err <= MAX_SHAPE_ERROR)
    usable &= px_per_iod >= (MIN_IOD_PX if known else MIN_IOD_NORM)
    return usable & ~_frozen(track, lm, present)


def _whole_xy(track: FaceTrack, frames: np.ndarray) -> np.ndarray:
    """All 478 cleaned x, y of the chosen frames, [n, 478, 2] float64."""
    return np.nan_to_num(np.asarray(track.landmarks)[frames][..., :2].astype(np.float64))


def _any_point_set(track: FaceTrack, lm: np.ndarray) -> np.ndarray:
    """[T] bool: any of the 478 points has a non-zero x or y (an all-zero frame is no face)."""
    found = np.any(lm != 0, axis=(1, 2))
    if not found.all():
        rest = ~found
        found[rest] = np.any(_whole_xy(track, rest) != 0, axis=(1, 2))
    return found


def _still(track: FaceTrack, lm: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[T] bool: a present frame after a present frame, no point moved by more than FROZEN_TOLERANCE. A point
    read that moves settles it; only the frames whose read points are still are read whole."""
    still = np.zeros(track.n_frames, bool)
    if track.n_frames < 2:
        return still
    pair = present[1:] & present[:-1]
    pair &= np.abs(lm[1:] - lm[:-1]).max(axis=(1, 2), initial=0.0) <= FROZEN_TOLERANCE
    after = np.flatnonzero(pair) + 1
    if after.size:
        moved = np.abs(_whole_xy(track, after) - _whole_xy(track, after - 1)).max(axis=(1, 2))
        still[after] = moved <= FROZEN_TOLERANCE
    return still


def _runs(track: FaceTrack, lm: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[T] each: still (`_still`), the length of the still run a frame is in (0 without a face), and whether
    that run's first frame follows a present frame (module doc)."""
    still = _still(track, lm, present)
    first = present & ~still  # a face that moved, or the first after no face: a run starts
    run = np.maximum(np.cumsum(first) - 1, 0)  # the run a present frame is in
    n_runs = max(int(first.sum()), 1)
    length = np.where(present, np.bincount(run[present], minlength=n_runs)[run], 0)
    after_face = np.concatenate([[False], present[:-1]])
    follows = np.zeros(n_runs, bool)
    follows[run[first]] = after_face[first]
    return still, length, present & follows[run]


def _frozen(track: FaceTrack, lm: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[T] bool: frames of a still run of at least FROZEN_MIN_FRAMES, its first one too unless it follows a
    present frame (module doc)."""
    still, length, led = _runs(track, lm, present)
    return (length >= FROZEN_MIN_FRAMES) & (still | ~led)


def unsettled(track: FaceTrack) -> int:
    """How many of the last frames of `track` could still change their mask when frames follow: those of
    the still run it ends in while the run is shorter than FROZEN_MIN_FRAMES (its first frame not, when it
    follows a present frame: it is usable however long the run grows). 0 when it ends in a frame without a
    face. Give the whole track or at least its last FROZEN_MIN_FRAMES frames (a run filling them is frozen).
    """
    if track.n_frames == 0:
        return 0
    lm = np.nan_to_num(np.asarray(track.landmarks)[:, _READ, :2].astype(np.float64))
    present = np.asarray(track.face_present, bool) & _any_point_set(track, lm)
    if not present[-1]:
        return 0
    _, length, led = _runs(track, lm, present)
    n = int(length[-1])
    return 0 if n >= FROZEN_MIN_FRAMES else n - int(led[-1])


def frame_features(track: FaceTrack) -> tuple[np.ndarray, np.ndarray]:
    """(features [T, VISUAL_FEATURE_DIM] float32, mask [T] float32) of a face track (see module doc)."""
    if track.n_frames == 0:
        return np.zeros((0, contract.VISUAL_FEATURE_DIM), np.float32), np.zeros(0, np.float32)
    read, aligned, size, pose, usable = _subset_view(track)
    pts = read * np.array([*size, size[0]])
    # only the points _geometry reads are turned to the frontal template
    frontal = align3d_at(pts[:, _COL[RIGID_INDEX]], pts[:, _COL[_GEOMETRY]])
    return _assemble(track, aligned, _geometry(frontal, _GEOMETRY_COL), pose, usable)


def _assemble(
    track: FaceTrack, aligned: np.ndarray, geo: dict[str, np.ndarray], pose: np.ndarray, usable: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix in the module doc's layout from the aligned subset, the AU geometry measures, the
    head pose and the mask (with the track's blendshapes); unusable frames all zero."""
    t = track.n_frames
    bs = np.clip(np.nan_to_num(np.asarray(track.blendshapes, np.float64)), 0.0, 1.0)
    ref = _template_measures()
    au = {
        "AU4": 0.5 * (bs[:, _BS["browDownLeft"]] + bs[:, _BS["browDownRight"]]),
        "AU6": (ref["cheek_ratio"] - geo["cheek_ratio"]) * ref["nose_len"] * AU_GEOMETRY_GAIN,
        "AU7": 0.5 * (bs[:, _BS["eyeSquintLeft"]] + bs[:, _BS["eyeSquintRight"]]),
        "AU9": (ref["nose_ratio"] - geo["nose_ratio"]) * ref["nose_len"] * AU_GEOMETRY_GAIN,
        "AU10": 0.5 * (bs[:, _BS["mouthUpperUpLeft"]] + bs[:, _BS["mouthUpperUpRight"]]),
        "AU43": np.clip(1.0 - geo["eye_ratio"] / ref["eye_ratio"], 0.0, 1.0),
    }
    feats = np.zeros((t, contract.VISUAL_FEATURE_DIM), np.float64)
    feats[:, contract.feature_slice("landmarks_xy")] = aligned.reshape(t, -1)
    feats[:, contract.feature_slice("blendshapes")] = bs
    feats[:, contract.feature_slice("au_proxies")] = np.stack([au[n] for n in contract.AU_NAMES], axis=1)
    feats[:, contract.feature_slice("head_pose")] = pose
    feats = np.clip(np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0), -FEATURE_LIMIT, FEATURE_LIMIT)
    feats[~usable] = 0.0
    return feats.astype(np.float32), usable.astype(np.float32)
