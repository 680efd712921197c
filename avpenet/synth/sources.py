"""Real face photos the renderer animates, each made neutral first: one subject's face comes from one of them.

Only photos shipped inside installed registry packages are used (nothing is downloaded; source and licence of
each in docs/DATA.md). A photo whose person smiles or shows teeth is made neutral before anything else: the
teeth are inpainted with the surrounding lip colour, the inner lips are brought together and the smile field
of ``face.action_fields`` is applied in reverse (mouth corners in and down); the real FaceLandmarker then runs
again on the neutralised photo, whose mesh becomes the source mesh. Why: the tracker reports exactly what
it is shown, so a smiling source photo turns every rendered frame — a high-pain cry included — into a smile.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from avpenet.synth import face

UPPER_INNER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)  # partners of UPPER_INNER, in the same order


@dataclass(frozen=True)
class Source:
    """One photo: how to load it, the square crop around the face (x0, y0, side), how much smile to undo."""

    name: str
    load: object  # () -> RGB uint8 array
    crop: tuple[int, int, int]
    unsmile: float  # intensity of the reversed smile field (0: the photo's mouth is already neutral)


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _grace_hopper() -> np.ndarray:
    import cv2
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: matplotlib's sample photo is missing")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


SOURCES = {
    s.name: s
    for s in (
        Source("astronaut", _astronaut, (118, 22, 212), 4.0),
        Source("grace_hopper", _grace_hopper, (52, 23, 420), 0.0),
    )
}
DEFAULT_SOURCE = "astronaut"


def cropped(src: Source) -> np.ndarray:
    """The square face crop of a source photo at face.RENDER_SIZE."""
    import cv2

    x0, y0, side = src.crop
    photo = src.load()
    return cv2.resize(
        photo[y0 : y0 + side, x0 : x0 + side],
        (face.RENDER_SIZE, face.RENDER_SIZE),
        interpolation=cv2.INTER_CUBIC,
    )


def _detect(image: np.ndarray) -> face.NeutralFace:
    from avpenet.features import tracker

    track = tracker.detect_image(image)
    if not track.face_present[0]:
        raise RuntimeError("FaceLandmarker found no face in a bundled source photo")
    return face._neutral_from(
        image, track.landmarks[0].astype(np.float64), track.head_pose[0].astype(np.float64)
    )


def neutralise(nf: face.NeutralFace, unsmile: float) -> np.ndarray:
    """The photo with teeth inpainted, lips closed and the smile reversed (RGB uint8, same size)."""
    import cv2

    from avpenet.synth import render

    pts = nf.points_px
    mask = np.zeros(nf.image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[list(render.INNER_MOUTH), :2]).astype(np.int32)], 255)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
    filled = cv2.inpaint(nf.image, mask, 4, cv2.INPAINT_TELEA)
    shape = nf.shape.copy()
    mid = (shape[list(UPPER_INNER)] + shape[list(LOWER_INNER)]) / 2
    shape[list(UPPER_INNER)] = mid
    shape[list(LOWER_INNER)] = mid
    shape = shape - unsmile * face.action_fields(nf.shape)["smile"]
    base = face._neutral_from(
        filled, pts / np.array([*nf.image.shape[1::-1], nf.image.shape[1]]), nf.head_pose
    )
    return render.Renderer(base).frame(nf.to_image(shape), np.zeros(2))


@functools.lru_cache(maxsize=len(SOURCES))
def neutral_face(name: str = DEFAULT_SOURCE) -> face.NeutralFace:
    """The neutral source face: the photo (neutralised where needed) and its tracked mesh."""
    return neutral_of(SOURCES[name])


def neutral_of(src: Source) -> face.NeutralFace:
    """neutral_face of any photo, a candidate source included (source_probe.py); not cached."""
    nf = _detect(cropped(src))
    if src.unsmile > 0:
        nf = _detect(neutralise(nf, src.unsmile))
    return nf


# --- single-action probes: what the tracker makes of each driven action (tests and docs/DATA.md) -----------
PROBES = {  # probe -> {action: intensity at probe level 1}; "closure" drives both eyes (AU43)
    "AU4": {"AU4": 1.0},
    "AU6/7": {"AU6": 1.0, "AU7": 1.0},
    "AU9/10": {"AU9": 1.0, "AU10": 1.0},
    "AU43": {"closure": 1.0},
    "AU25-27": {"jaw": 1.0},
    "smile": {"smile": 1.0, "AU6": 0.6},  # a Duchenne smile raises the cheeks, as face.expression drives it
    "talking": {"jaw": 0.3},  # the largest talking/mouthing jaw amplitude face.expression draws
    "yawn": {"jaw": 1.0, "closure": 0.5, "brow_raise": 0.4, "AU7": 0.4},
}


def probe_frames(nf: face.NeutralFace, probe: str, levels, shape: np.ndarray | None = None) -> np.ndarray:
    """[L, H, W, 3] renders of one probe at each level (0 = neutral), head still, in the photo's frame."""
    from avpenet.synth import render

    n = len(levels)
    lv = np.asarray(levels, np.float64)
    acts = {a: np.zeros(n) for a in face.ACTIONS}
    closure = np.zeros((n, 2))
    for action, amp in PROBES[probe].items():
        if action == "closure":
            closure[:] = (amp * lv)[:, None]
        else:
            acts[action] = amp * lv
    expr = face.Expression(actions=acts, closure=closure, pose=np.zeros((n, 3)), gaze=np.zeros((n, 2)))
    ident = face.Identity(
        shape=nf.shape.copy() if shape is None else shape, au_weights={}, share_jitter={},
        squint_baseline=(0.0, 0.0), brow_baseline=0.0, blink_per_min=0.0, gaze_bias=(0.0, 0.0),
    )  # fmt: skip
    return render.render_frames(nf, face.driven_points(ident, expr, face.render_camera(nf)), closure)


def subject_source(seed: int, subject_index: int) -> str:
    """The source photo of a subject: its own random stream (no other draw of the generator moves)."""
    names = sorted(SOURCES)
    return names[int(np.random.default_rng([int(seed) & 0xFFFFFFFF, 7, subject_index]).integers(len(names)))]


def neutral_states() -> dict[str, dict[str, np.ndarray]]:
    """Every source's neutral face as plain arrays, so worker processes need no mediapipe run of their own."""
    out = {}
    for name in SOURCES:
        nf = neutral_face(name)
        h, w = nf.image.shape[:2]
        out[name] = {
            "image": nf.image,
            "landmarks": nf.points_px / np.array([w, h, w]),
            "head_pose": nf.head_pose,
        }
    return out
