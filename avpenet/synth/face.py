"""Synthetic face tracks: what mediapipe FaceLandmarker would REPORT for a subject's face over a clip.

Built on a real neutral face: the real FaceLandmarker is run once (IMAGE mode) on a crop of
`skimage.data.astronaut()`, and every track is that mesh deformed by
  per-subject identity (neonate vs adult proportions, a smooth random shape field),
  pain action units AU4, AU6/7, AU9/10, AU43 plus cry mouth opening and lip stretch (onset–apex–offset),
  confounders (smile, talking, yawn), blinks, head pose and tracker jitter,
then placed in a camera frame. Motion and blendshapes are what the tracker reports on rendered video
(docs/ARCHITECTURE.md, Platform notes: brows/nose under-reported, a closed eye still reads 25-40 % open,
eyeBlink ≤ ~0.5, cheekSquint/noseSneer stuck at 0, eyeSquint baseline 0.1-0.5, mouthUpperUp rising with
smiles), so the synthetic `.npz` and a tracked render of the same clip agree (tests/synth/test_synth_render.py
closes the loop).

Geometry works in a face frame: origin between the irises, u along the inter-ocular axis, v down, unit =
inter-ocular distance (IOD); z is mediapipe's relative depth in the same unit.

Why one module over 300 lines: identity, expression, pose, camera and the reported blendshapes all
work on the same mesh indices and face frame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from avpenet import contract
from avpenet.features.track import FaceTrack

BS = {name: i for i, name in enumerate(contract.BLENDSHAPE_NAMES)}
RENDER_SIZE = 384  # side (px) of the rendered frames: the astronaut's face, cropped and upscaled

# --- mediapipe face-mesh index groups (subject's right eye is on the image left) ----------------------------
RIGHT_UPPER_LID = (246, 161, 160, 159, 158, 157, 173)
RIGHT_LOWER_LID = (7, 163, 144, 145, 153, 154, 155)
RIGHT_UPPER_RING = (247, 30, 29, 27, 28, 56, 190)  # the mesh ring just above the upper lid
LEFT_UPPER_LID = (466, 388, 387, 386, 385, 384, 398)
LEFT_LOWER_LID = (249, 390, 373, 374, 380, 381, 382)
LEFT_UPPER_RING = (467, 260, 259, 257, 258, 286, 414)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
NOSE_WINGS = (48, 64, 98, 129, 102, 49, 278, 294, 327, 358, 331, 279)
UPPER_LIP = (185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_LIP_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
MOUTH_CORNERS = (61, 291, 78, 308)
CHEEKS = (50, 280, 205, 425, 117, 346)
IRIS_RIGHT = tuple(range(468, 473))
IRIS_LEFT = tuple(range(473, 478))
IRIS = IRIS_RIGHT + IRIS_LEFT
CHIN = 152
# Points no action moves (upper face outline, nose bridge, eye corners): they carry the rigid head motion.
RIGID_POINTS = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 234, 127, 162, 21, 54, 103, 67, 109,
    168, 6, 197, 195, 5, 4, 33, 133, 263, 362,
)  # fmt: skip

# Share of a driven displacement the real tracker reports on our renders (measured with
# tests/synth/test_synth_render.py's method: single-action clips, regression of recovered on driven motion;
# see docs/DATA.md). Nose-wing motion (AU9) is not recovered at all, as noseSneer never moves on real faces.
REPORTED_SHARE = {
    "AU4": 0.4, "AU6": 0.35, "AU7": 0.35, "AU9": 0.0, "AU10": 0.65, "AU43": 0.45,
    "jaw": 0.75, "stretch": 0.5, "smile": 0.6, "brow_raise": 0.65,
}  # fmt: skip
ACTIONS = tuple(REPORTED_SHARE)
JAW_OPEN_IOD = 0.28  # chin travel (IOD) of a fully open crying mouth


# --- the real neutral face ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeutralFace:
    """The tracked neutral face the generator deforms, and the photo the renderer warps."""

    image: np.ndarray  # [RENDER_SIZE, RENDER_SIZE, 3] uint8 RGB crop of the astronaut photo
    points_px: np.ndarray  # [478, 3] float64: x, y in pixels of `image`, z in pixels (mediapipe z · width)
    head_pose: np.ndarray  # [4, 4] tracker facial transformation matrix of the photo
    origin: np.ndarray  # [2] face-frame origin (px): midpoint of the iris centres
    axes: np.ndarray  # [2, 2] rows: unit u (inter-ocular) and v (down) axes in image pixels
    iod_px: float
    shape: np.ndarray  # [478, 3] the mesh in face-frame units (IOD = 1)

    def to_image(self, shape: np.ndarray) -> np.ndarray:
        """Face-frame points [..., 478, 3] → pixel points of the photo frame (x, y, z in px)."""
        xy = self.origin + self.iod_px * (shape[..., :1] * self.axes[0] + shape[..., 1:2] * self.axes[1])
        return np.concatenate([xy, shape[..., 2:3] * self.iod_px], axis=-1)


def _crop_astronaut() -> np.ndarray:
    """A square crop of skimage's astronaut photo around her face, upscaled to RENDER_SIZE."""
    import cv2
    from skimage import data

    photo = data.astronaut()
    x0, y0, side = 118, 22, 212  # face bbox ≈ x 180-270, y 72-178 px; margin for head motion and hair
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(crop, (RENDER_SIZE, RENDER_SIZE), interpolation=cv2.INTER_CUBIC)


@functools.lru_cache(maxsize=1)
def neutral_face() -> NeutralFace:
    """Run the real FaceLandmarker (IMAGE mode) on the photo once per process."""
    from avpenet.features import tracker

    image = _crop_astronaut()
    track = tracker.detect_image(image)
    if not track.face_present[0]:
        raise RuntimeError("FaceLandmarker found no face in the bundled astronaut photo")
    return _neutral_from(image, track.landmarks[0].astype(np.float64), track.head_pose[0].astype(np.float64))


def _neutral_from(image: np.ndarray, landmarks: np.ndarray, head_pose: np.ndarray) -> NeutralFace:
    h, w = image.shape[:2]
    pts = landmarks * np.array([w, h, w], np.float64)
    right, left = pts[IRIS_RIGHT[0], :2], pts[IRIS_LEFT[0], :2]
    origin = (right + left) / 2
    iod = float(np.linalg.norm(left - right))
    u = (left - right) / iod
    v = np.array([-u[1], u[0]])  # image y is down, so this points down the face
    rel = pts[:, :2] - origin
    shape = np.stack([rel @ u / iod, rel @ v / iod, pts[:, 2] / iod], axis=1)
    return NeutralFace(image, pts, head_pose, origin, np.stack([u, v]), iod, shape)


def neutral_from_arrays(state: dict[str, np.ndarray]) -> NeutralFace:
    """Rebuild the neutral face in a worker from `neutral_state()` (no mediapipe needed there)."""
    return _neutral_from(state["image"], state["landmarks"], state["head_pose"])


def neutral_state() -> dict[str, np.ndarray]:
    nf = neutral_face()
    h, w = nf.image.shape[:2]
    return {"image": nf.image, "landmarks": nf.points_px / np.array([w, h, w]), "head_pose": nf.head_pose}


# --- displacement fields ------------------------------------------------------------------------------------
def _rbf(shape: np.ndarray, centres: tuple[int, ...], sigma: float) -> np.ndarray:
    """Weight per landmark: 1 at the centre points, Gaussian fall-off with face-frame distance."""
    d = np.linalg.norm(shape[:, None, :2] - shape[list(centres)][None, :, :2], axis=2).min(axis=1)
    return np.exp(-0.5 * (d / sigma) ** 2)


def _lid_closure(shape: np.ndarray, upper, lower, ring, share_lower: float = 0.05) -> np.ndarray:
    """Field that brings each upper-lid point onto its lower-lid partner (a full blink at weight 1)."""
    field = np.zeros_like(shape)
    gap = shape[list(lower)] - shape[list(upper)]
    field[list(upper)] = gap * (1 - share_lower)
    field[list(lower)] = -gap * share_lower
    field[list(ring)] = gap * (1 - share_lower) * 0.3
    return field


@functools.lru_cache(maxsize=8)
def _fields_cached(key: bytes) -> dict[str, np.ndarray]:
    return _build_fields(np.frombuffer(key, np.float64).reshape(contract.N_LANDMARKS, 3))


def action_fields(shape: np.ndarray) -> dict[str, np.ndarray]:
    """Driven displacement (face units) of each action at intensity 1, for one face shape [478, 3]."""
    return _fields_cached(np.ascontiguousarray(shape, np.float64).tobytes())


def _build_fields(s: np.ndarray) -> dict[str, np.ndarray]:
    n = s.shape[0]
    f: dict[str, np.ndarray] = {}
    brows = RIGHT_BROW + LEFT_BROW
    w = _rbf(s, brows, 0.05)
    inward = -np.sign(s[:, 0]) * np.clip(1.0 - np.abs(s[:, 0]) / 0.9, 0, 1)
    f["AU4"] = np.stack([0.035 * inward * w, 0.075 * w, np.zeros(n)], axis=1)
    f["brow_raise"] = np.stack([np.zeros(n), -0.06 * w, np.zeros(n)], axis=1)
    eye_open = (
        s[list(RIGHT_LOWER_LID + LEFT_LOWER_LID), 1] - s[list(RIGHT_UPPER_LID + LEFT_UPPER_LID), 1]
    ).mean()
    lids_r = _lid_closure(s, RIGHT_UPPER_LID, RIGHT_LOWER_LID, RIGHT_UPPER_RING, share_lower=0.5)
    lids_l = _lid_closure(s, LEFT_UPPER_LID, LEFT_LOWER_LID, LEFT_UPPER_RING, share_lower=0.5)
    f["AU7"] = 0.45 * (lids_r + lids_l)  # lids tighten: both lids towards the middle, eye narrows
    w_cheek = _rbf(s, CHEEKS, 0.12)
    f["AU6"] = np.stack([np.zeros(n), -0.045 * w_cheek, np.zeros(n)], axis=1)
    f["AU6"][list(RIGHT_LOWER_LID + LEFT_LOWER_LID), 1] -= 0.3 * eye_open
    w_nose = _rbf(s, NOSE_WINGS, 0.04)
    f["AU9"] = np.stack([-0.012 * np.sign(s[:, 0]) * w_nose, -0.04 * w_nose, np.zeros(n)], axis=1)
    w_lip = _rbf(s, UPPER_LIP, 0.035) * np.clip(1.2 - np.abs(s[:, 0]) / 0.7, 0.3, 1.0)
    w_lip[list(LOWER_LIP_INNER)] = 0.0  # the upper lip rises off the lower one (on a closed mouth they touch)
    f["AU10"] = np.stack([np.zeros(n), -0.05 * w_lip, np.zeros(n)], axis=1)
    f["AU43_right"] = _lid_closure(s, RIGHT_UPPER_LID, RIGHT_LOWER_LID, RIGHT_UPPER_RING)
    f["AU43_left"] = _lid_closure(s, LEFT_UPPER_LID, LEFT_LOWER_LID, LEFT_UPPER_RING)
    # Jaw: everything below the mouth line drops, fully from the lower lip down, less towards the jaw angles.
    v_mouth = s[13, 1]
    v_lower = s[14, 1]
    ramp = np.clip((s[:, 1] - v_mouth) / max(v_lower - v_mouth, 1e-3), 0, 1)
    ramp = ramp * np.clip(1.15 - (np.abs(s[:, 0]) / 1.1) ** 2, 0.15, 1.0)
    ramp[list(MOUTH_CORNERS)] = 0.45
    f["jaw"] = np.stack([np.zeros(n), JAW_OPEN_IOD * ramp, -0.05 * ramp], axis=1)
    w_corner = _rbf(s, MOUTH_CORNERS, 0.09)
    side = np.sign(s[:, 0])
    f["stretch"] = np.stack([0.055 * side * w_corner, 0.01 * w_corner, np.zeros(n)], axis=1)
    f["smile"] = np.stack([0.04 * side * w_corner, -0.045 * w_corner, np.zeros(n)], axis=1)
    for field in f.values():
        field[list(IRIS)] = 0.0  # the tracker's iris model follows the eyeball, not the lids
    return f


# --- per-subject identity -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """A subject's face: mesh shape, expression style and tracker baselines."""

    shape: np.ndarray  # [478, 3] face-frame mesh (IOD = 1)
    au_weights: dict[str, float]  # per-action intensity multiplier (individual expression style)
    share_jitter: dict[str, float]  # per-action deviation of the tracker's reported share
    squint_baseline: tuple[float, float]  # eyeSquint (left, right) on the neutral face
    brow_baseline: float
    blink_per_min: float
    gaze_bias: tuple[float, float]


def make_identity(age_group: str, neutral: NeutralFace, rng: np.random.Generator) -> Identity:
    """Deform the real neutral mesh into a subject: neonate proportions plus a smooth random shape field."""
    s = neutral.shape.copy()
    u, v = s[:, 0], s[:, 1]
    if age_group == "neonate":
        # Short lower face, wide round cheeks, relatively large eyes and a flat nose bridge.
        lower = v > 0.15
        s[lower, 1] = 0.15 + (v[lower] - 0.15) * rng.uniform(0.78, 0.88)
        s[:, 0] *= 1.0 + rng.uniform(0.04, 0.1) * np.clip(v / 1.5 + 0.3, 0, 1)
        for lid_set, centre in (
            (RIGHT_UPPER_LID + RIGHT_LOWER_LID, -0.5),
            (LEFT_UPPER_LID + LEFT_LOWER_LID, 0.5),
        ):
            idx = list(lid_set)
            s[idx, 0] = centre + (s[idx, 0] - centre) * 1.08
        s[:, 2] *= 0.8
    # Smooth random field: quadratic polynomial in (u, v) per axis, ~2-4 % IOD at the face outline.
    basis = np.stack([u, v, u * u, u * v, v * v], axis=1)
    coef = rng.normal(0, 0.025, size=(5, 2))
    s[:, :2] += basis @ coef * np.array([1.0, 1.0]) * 0.6
    s[:, 2] *= rng.uniform(0.9, 1.1)
    # Mouth width and eye opening vary between people.
    mouth = list(UPPER_LIP + LOWER_LIP_INNER + MOUTH_CORNERS)
    s[mouth, 0] *= rng.uniform(0.92, 1.08)
    au_weights = {a: float(rng.uniform(0.6, 1.3)) for a in ACTIONS}
    share_jitter = {a: float(rng.uniform(-0.08, 0.08)) for a in ACTIONS}
    squint = rng.uniform(0.1, 0.5)
    return Identity(
        shape=s,
        au_weights=au_weights,
        share_jitter=share_jitter,
        squint_baseline=(float(np.clip(squint + rng.normal(0, 0.04), 0.05, 0.55)), float(squint)),
        brow_baseline=float(rng.uniform(0.0, 0.12)),
        blink_per_min=float(rng.uniform(4, 10) if age_group == "neonate" else rng.uniform(8, 22)),
        gaze_bias=(float(rng.normal(0, 0.1)), float(rng.normal(0, 0.1))),
    )


# --- expression time courses --------------------------------------------------------------------------------
def onset_apex_offset(n: int, start: float, end: float, onset: float, offset: float) -> np.ndarray:
    """Intensity 0..1 per frame: smooth rise over `onset` s from start, apex to end, decay over `offset` s."""
    t = np.arange(n) / contract.FPS
    rise = np.clip((t - start) / max(onset, 1e-3), 0, 1)
    fall = np.clip(1 - (t - end) / max(offset, 1e-3), 0, 1)
    x = np.minimum(rise, fall)
    return x * x * (3 - 2 * x)


@dataclass
class Expression:
    """Driven action intensities per frame (0..1), eye closures, and head/gaze motion."""

    actions: dict[str, np.ndarray]  # ACTIONS (AU43 as the mean of the eyes) -> [T]
    closure: np.ndarray  # [T, 2] eye closure (right, left), AU43 and blinks
    pose: np.ndarray  # [T, 3] yaw, pitch, roll (rad) relative to the neutral photo
    gaze: np.ndarray  # [T, 2] horizontal (+ subject's left), vertical (+ up)


def expression(
    identity: Identity,
    age_group: str,
    face_arousal: float,
    episodes: list[tuple[float, float]],
    voiced_frames: np.ndarray,
    confounders: tuple[str, ...],
    n: int,
    rng: np.random.Generator,
    *,
    pose_scale: float = 1.0,
) -> Expression:
    """Pain AUs with onset–apex–offset per distress episode, cry mouth in sync with the voice, confounders.

    face_arousal (0..~1.2) sets the apex intensities: AU4 and AU6/7 first, AU9/10 and lip stretch from
    moderate pain, AU43 (eyes squeezed shut) at high pain; a tonic share stays between episodes.
    """
    a = float(max(face_arousal, 0.0))
    env = np.zeros(n)
    for start, end in episodes:
        env = np.maximum(env, onset_apex_offset(n, start, end, rng.uniform(0.2, 0.8), rng.uniform(0.3, 1.0)))
    tonic = rng.uniform(0.15, 0.4)
    env = tonic + (1 - tonic) * env
    w = identity.au_weights
    apex = {
        "AU4": np.clip(a * 0.9 * w["AU4"], 0, 1),
        "AU6": np.clip((a - 0.1) * 0.9 * w["AU6"], 0, 1),
        "AU7": np.clip(a * 0.8 * w["AU7"], 0, 1),
        "AU9": np.clip((a - 0.25) * 1.0 * w["AU9"], 0, 1),
        "AU10": np.clip((a - 0.2) * 1.0 * w["AU10"], 0, 1),
        "AU43": np.clip((a - (0.35 if age_group == "neonate" else 0.5)) * 1.6 * w["AU43"], 0, 1),
        "stretch": np.clip((a - 0.2) * 0.9 * w["stretch"], 0, 1),
    }
    acts = {
        k: np.clip(v * env * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, n), 0, 1) for k, v in apex.items()
    }
    # Cry face: the mouth opens while the voice sounds (wide for neonatal cries, less for adult moans).
    open_amp = (0.55 if age_group == "neonate" else 0.3) * rng.uniform(0.7, 1.2) * min(1.0, 0.4 + a)
    jaw = _smooth(voiced_frames, 2) * open_amp
    acts["smile"] = np.zeros(n)
    acts["brow_raise"] = np.zeros(n)
    if "smile" in confounders:
        s0 = rng.uniform(0, n / contract.FPS * 0.6)
        acts["smile"] = rng.uniform(0.4, 0.9) * onset_apex_offset(n, s0, s0 + rng.uniform(0.8, 3), 0.4, 0.6)
        acts["AU6"] = np.maximum(acts["AU6"], 0.6 * acts["smile"])  # Duchenne smile raises the cheeks
    if "talking" in confounders:
        s0 = rng.uniform(0, n / contract.FPS * 0.5)
        seg = onset_apex_offset(n, s0, s0 + rng.uniform(1.0, 3.0), 0.1, 0.1)
        syll = 0.5 + 0.5 * np.sin(
            2 * np.pi * rng.uniform(3, 5) * np.arange(n) / contract.FPS + rng.uniform(0, 6)
        )
        jaw = np.maximum(jaw, seg * syll * rng.uniform(0.12, 0.3))
    closure_extra = np.zeros(n)
    if "yawn" in confounders:
        s0 = rng.uniform(0, max(0.1, n / contract.FPS - 3.0))
        yawn = onset_apex_offset(n, s0, s0 + rng.uniform(0.8, 1.8), 0.8, 0.8)
        jaw = np.maximum(jaw, yawn * rng.uniform(0.7, 1.0))
        closure_extra = yawn * rng.uniform(0.3, 0.7)
        acts["brow_raise"] = np.maximum(acts["brow_raise"], yawn * rng.uniform(0.2, 0.6))
        acts["AU7"] = np.maximum(acts["AU7"], yawn * 0.4)
    acts["jaw"] = np.clip(jaw + np.abs(rng.normal(0, 0.01, n)), 0, 1)
    # Blinks and AU43 per eye.
    base = np.maximum.reduce([acts["AU43"], _blinks(identity, n, rng), closure_extra])
    closure = np.clip(
        np.stack([base, base], axis=1) + rng.normal(0, 0.03, (n, 2)) * (base[:, None] > 0.05), 0, 1
    )
    # Head: a clip-level offset, slow drift, and agitation that grows with distress.
    agitation = 0.02 + 0.06 * min(a, 1.0) * (1.5 if age_group == "neonate" else 1.0)
    offset = rng.normal(0, [0.15, 0.1, 0.08])
    drift = np.stack([_smooth(rng.normal(0, 1, n), 8) for _ in range(3)], axis=1)
    drift /= np.maximum(drift.std(axis=0), 1e-6)
    pose = (
        offset + drift * np.array([0.05, 0.04, 0.03]) + drift[::-1] * agitation * env[:, None]
    ) * pose_scale
    gaze = identity.gaze_bias + np.stack([_smooth(rng.normal(0, 0.25, n), 3) for _ in range(2)], axis=1)
    return Expression(actions=acts, closure=closure, pose=pose, gaze=gaze)


def _blinks(identity: Identity, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] eye closure of spontaneous blinks at the subject's rate: 2-3 frames each."""
    blinks = np.zeros(n)
    rate = identity.blink_per_min / 60 / contract.FPS
    for i in np.flatnonzero(rng.uniform(size=n) < rate):
        blinks[i] = 1.0
        if i + 1 < n:
            blinks[i + 1] = max(blinks[i + 1], 0.6)
        if i > 0:
            blinks[i - 1] = max(blinks[i - 1], 0.3)
    return blinks


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or x.size == 0:
        return np.asarray(x, np.float64)
    k = np.hanning(2 * width + 1)
    k /= k.sum()
    return np.convolve(np.pad(x, width, mode="edge"), k, mode="valid")


# --- assembling a track -------------------------------------------------------------------------------------
def _rotation(pose: np.ndarray) -> np.ndarray:
    """[T, 3, 3] rotations in the face frame (u right, v down, z depth) from yaw, pitch, roll."""
    yaw, pitch, roll = pose[:, 0], pose[:, 1], pose[:, 2]
    c, s = np.cos, np.sin
    t = pose.shape[0]
    ry = np.zeros((t, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = c(yaw), s(yaw), 1, -s(yaw), c(yaw)
    rx = np.zeros((t, 3, 3))
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = (
        1,
        c(pitch),
        -s(pitch),
        s(pitch),
        c(pitch),
    )
    rz = np.zeros((t, 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c(roll), -s(roll), s(roll), c(roll), 1
    return rz @ rx @ ry


def deformed_shapes(identity: Identity, expr: Expression, *, reported: bool) -> np.ndarray:
    """[T, 478, 3] face-frame meshes with the actions applied (driven motion, or the tracker's report)."""
    fields = action_fields(identity.shape)
    t = expr.closure.shape[0]
    out = np.broadcast_to(identity.shape, (t, *identity.shape.shape)).copy()
    for act in ACTIONS:
        if act == "AU43":
            continue
        share = REPORTED_SHARE[act] + identity.share_jitter[act] if reported else 1.0
        out += share * expr.actions[act][:, None, None] * fields[act][None]
    share = REPORTED_SHARE["AU43"] + identity.share_jitter["AU43"] if reported else 1.0
    out += share * expr.closure[:, 0, None, None] * fields["AU43_right"][None]
    out += share * expr.closure[:, 1, None, None] * fields["AU43_left"][None]
    return out


def posed(shapes: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Rotate each frame's mesh about its centroid by the head pose."""
    centre = shapes.mean(axis=1, keepdims=True)
    return np.einsum("tij,tnj->tni", _rotation(pose), shapes - centre) + centre


@dataclass(frozen=True)
class Camera:
    """Where the face sits in the frame: image size, IOD in pixels, face-origin position, in-plane angle."""

    image_size: tuple[int, int]
    iod_px: float
    origin: tuple[float, float]
    angle: float  # radians of the inter-ocular axis in the image


def random_camera(rng: np.random.Generator) -> Camera:
    """A bedside or handheld camera: common video sizes, face 8-30 % of the width, roughly centred."""
    w, h = [(640, 480), (1280, 720), (1920, 1080), (720, 1280), (960, 720)][int(rng.integers(0, 5))]
    iod = rng.uniform(0.08, 0.3) * min(w, h) * 0.9
    origin = (w * rng.uniform(0.35, 0.65), h * rng.uniform(0.3, 0.55))
    return Camera((w, h), float(iod), (float(origin[0]), float(origin[1])), float(rng.normal(0, 0.05)))


def render_camera(neutral: NeutralFace) -> Camera:
    """The photo's own frame (rendered clips are tracked in it)."""
    angle = float(np.arctan2(neutral.axes[0, 1], neutral.axes[0, 0]))
    size = (neutral.image.shape[1], neutral.image.shape[0])
    return Camera(size, neutral.iod_px, (float(neutral.origin[0]), float(neutral.origin[1])), angle)


def to_pixels(shapes: np.ndarray, camera: Camera) -> np.ndarray:
    """Face-frame meshes [T, 478, 3] → pixel coordinates in the camera frame (z in px)."""
    ca, sa = np.cos(camera.angle), np.sin(camera.angle)
    u_axis, v_axis = np.array([ca, sa]), np.array([-sa, ca])
    xy = np.asarray(camera.origin) + camera.iod_px * (shapes[..., :1] * u_axis + shapes[..., 1:2] * v_axis)
    return np.concatenate([xy, shapes[..., 2:3] * camera.iod_px], axis=-1)


_FLIP = np.diag([1.0, -1.0, -1.0])  # face frame (y down, z away) <-> mediapipe metric frame (y up, z towards)


def head_pose_matrices(neutral: NeutralFace, pose: np.ndarray, camera: Camera) -> np.ndarray:
    """The tracker's 4x4 facial transformation per frame: the photo's matrix re-rolled, rotated and moved."""
    photo_angle = float(np.arctan2(neutral.axes[0, 1], neutral.axes[0, 0]))
    roll = pose.copy()
    roll[:, 2] += camera.angle - photo_angle
    rot = _FLIP @ _rotation(roll) @ _FLIP @ neutral.head_pose[:3, :3]
    t = pose.shape[0]
    out = np.zeros((t, 4, 4))
    out[:, :3, :3] = rot
    depth = neutral.head_pose[2, 3] * neutral.iod_px / camera.iod_px * (camera.image_size[0] / RENDER_SIZE)
    w, h = camera.image_size
    focal = w  # ~53° horizontal field of view
    out[:, 0, 3] = (camera.origin[0] - w / 2) / focal * -depth
    out[:, 1, 3] = -(camera.origin[1] - h / 2) / focal * -depth
    out[:, 2, 3] = depth
    out[:, 3, 3] = 1.0
    return out


# Blendshape responses per unit of driven action, measured on renders (docs/DATA.md): browDown +0.09 at a full
# AU4, eyeSquint +0.17-0.2 for AU6/7 and +0.36 for a closed eye, eyeBlink +0.26 for a closed eye (≤ ~0.5 on
# real faces), mouthUpperUp +0.26 (AU10) / +0.31 (open mouth) / +0.15 (smile). Set a little above the render
# figures where a warped photo under-shows the cue (no wrinkles; an opened mouth stretches the teeth).
BROW_DOWN_GAIN = 0.15
EYE_BLINK_GAIN = 0.4
JAW_OPEN_GAIN = 0.4


def blendshapes(identity: Identity, expr: Expression, rng: np.random.Generator) -> np.ndarray:
    """[T, 52] scores as the tracker reports them for these actions (its quirks included)."""
    a = expr.actions
    t = expr.closure.shape[0]
    b = np.zeros((t, contract.N_BLENDSHAPES))

    def put(name: str, value) -> None:
        b[:, BS[name]] = value

    asym = rng.normal(0, 0.03, 2)
    for side, k in (("Left", 0), ("Right", 1)):
        eye = 1 if side == "Left" else 0  # closure columns are (right, left)
        put(f"browDown{side}", identity.brow_baseline + BROW_DOWN_GAIN * a["AU4"] + asym[k])
        put(f"browOuterUp{side}", 0.08 + 0.45 * a["brow_raise"] - 0.05 * a["AU4"])
        squint = 0.2 * np.maximum(a["AU6"], a["AU7"]) + 0.35 * expr.closure[:, eye]
        put(f"eyeSquint{side}", identity.squint_baseline[k] + squint)
        put(f"eyeBlink{side}", 0.03 + EYE_BLINK_GAIN * expr.closure[:, eye] + 0.05 * a["AU7"])
        put(f"eyeWide{side}", 0.03 + 0.2 * a["brow_raise"] * (1 - expr.closure[:, eye]))
        put(f"mouthStretch{side}", 0.02 + 0.1 * a["stretch"] + 0.05 * a["jaw"])
        put(
            f"mouthUpperUp{side}",
            0.03 + 0.3 * a["AU10"] + 0.3 * a["jaw"] + 0.05 * a["AU9"] + 0.15 * a["smile"],
        )
        put(f"mouthSmile{side}", 0.02 + 0.85 * a["smile"])
        put(f"mouthLowerDown{side}", 0.04 + 0.35 * a["jaw"] * (0.5 + a["stretch"]) + 0.15 * a["AU10"])
        put(f"mouthFrown{side}", 0.01 + 0.25 * a["stretch"] * (1 - a["smile"]))
        put(f"mouthPress{side}", 0.08 + 0.1 * a["AU4"] * (1 - a["jaw"]))
        put(f"mouthDimple{side}", 0.02 + 0.3 * a["smile"] + 0.15 * a["stretch"])
        put(f"cheekSquint{side}", 0.0)
        put(f"noseSneer{side}", 0.0)
    gh, gv = expr.gaze[:, 0], expr.gaze[:, 1]
    put("eyeLookOutLeft", 0.05 + 0.5 * np.maximum(gh, 0))
    put("eyeLookInRight", 0.05 + 0.5 * np.maximum(gh, 0))
    put("eyeLookInLeft", 0.05 + 0.5 * np.maximum(-gh, 0))
    put("eyeLookOutRight", 0.05 + 0.5 * np.maximum(-gh, 0))
    for side in ("Left", "Right"):
        put(f"eyeLookUp{side}", 0.05 + 0.5 * np.maximum(gv, 0))
        put(f"eyeLookDown{side}", 0.08 + 0.5 * np.maximum(-gv, 0) + 0.2 * np.max(expr.closure, axis=1))
    put("browInnerUp", 0.03 + 0.4 * a["brow_raise"] + 0.15 * a["AU4"] * identity.au_weights["brow_raise"])
    put("jawOpen", 0.01 + JAW_OPEN_GAIN * a["jaw"])
    put("mouthClose", 0.02 * (1 - a["jaw"]))
    put("mouthShrugUpper", 0.02 + 0.2 * a["AU10"] * (1 - a["jaw"]))
    put("mouthShrugLower", 0.01 + 0.15 * a["AU4"] * (1 - a["jaw"]))
    put("mouthRollUpper", 0.02 + 0.05 * a["stretch"])
    put("mouthRollLower", 0.01 + 0.05 * a["stretch"])
    put("mouthFunnel", 0.005 + 0.1 * a["jaw"] * (1 - a["stretch"]))
    put("mouthPucker", 0.005 + 0.05 * a["jaw"])
    put("cheekPuff", 0.001)
    for name in ("jawForward", "jawLeft", "jawRight", "mouthLeft", "mouthRight"):
        put(name, 0.002)
    zero = [
        BS[n] for n in ("_neutral", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight")
    ]
    b += rng.normal(0, 0.012, b.shape) * (b > 0.004)
    b[:, zero] = 0.0
    return np.clip(b, 0.0, 1.0)


def tracker_jitter(points_px: np.ndarray, iod_px: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame tracker noise: a common shift (~0.25 % IOD) plus per-point scatter (~0.15 % IOD)."""
    t, n, _ = points_px.shape
    common = rng.normal(0, 0.0025 * iod_px, (t, 1, 3))
    scatter = rng.normal(0, 0.0015 * iod_px, (t, n, 3))
    return points_px + common + scatter


def synth_track(
    identity: Identity,
    expr: Expression,
    neutral: NeutralFace,
    camera: Camera,
    rng: np.random.Generator,
) -> FaceTrack:
    """The reported FaceTrack of a clip: attenuated motion, tracker jitter, blendshapes and head pose."""
    shapes = posed(deformed_shapes(identity, expr, reported=True), expr.pose)
    px = tracker_jitter(to_pixels(shapes, camera), camera.iod_px, rng)
    w, h = camera.image_size
    t = px.shape[0]
    return FaceTrack(
        landmarks=(px / np.array([w, h, w])).astype(np.float32),
        blendshapes=blendshapes(identity, expr, rng).astype(np.float32),
        face_present=np.ones(t, np.bool_),
        head_pose=head_pose_matrices(neutral, expr.pose, camera).astype(np.float32),
        image_size=np.array([w, h], np.int32),
    )


def driven_points(identity: Identity, expr: Expression, camera: Camera) -> np.ndarray:
    """[T, 478, 3] the TRUE (driven) mesh in pixels: what the renderer animates the photo with."""
    return to_pixels(posed(deformed_shapes(identity, expr, reported=False), expr.pose), camera)
