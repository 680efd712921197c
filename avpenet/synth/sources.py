"""Real face photos the renderer animates, each made neutral first: one subject's face comes from one of them.

Only photos shipped inside registry packages are used (nothing is downloaded at run time; a photo from a
Debian package is fetched once by `make setup`, avpenet.synth.photos; source and licence of each in
docs/DATA.md). A photo whose person smiles, shows teeth or looks aside is made neutral before anything else:
the teeth are inpainted with the surrounding lip colour, the inner lips are brought together, the smile
field of ``face.action_fields`` is applied in reverse (mouth corners in and down) and the irises are moved
to look ahead; the real FaceLandmarker then runs again on the neutralised photo, whose mesh becomes the
source mesh. Why: the tracker reports exactly what it is shown, so a smiling source photo turns every
rendered frame — a high-pain cry included — into a smile.

Which faces a dataset's subjects get is a choice of `avpenet synth --faces` (DEFAULT_FACES: the three the
reference was trained on).
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
    open_mouth: bool = False  # teeth inpainted and lips closed though there is no smile to undo
    gaze: tuple[float, float] = (0.0, 0.0)  # iris shift (render pixels, +x right, +y down) to look ahead

    @property
    def neutralised(self) -> bool:
        return self.unsmile > 0 or self.open_mouth or self.gaze != (0.0, 0.0)


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


def _jesper_pedersen() -> np.ndarray:
    import cv2

    from avpenet.synth import photos

    bgr = cv2.imdecode(np.frombuffer(photos.read("jesper_pedersen"), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


SOURCES = {
    s.name: s
    for s in (
        Source("astronaut", _astronaut, (118, 22, 212), 4.0),
        Source("grace_hopper", _grace_hopper, (52, 23, 420), 0.0),
        Source("jesper_pedersen", _jesper_pedersen, (190, 40, 410), 0.0, open_mouth=True, gaze=(-8.0, 6.0)),
    )
}
DEFAULT_SOURCE = "astronaut"
DEFAULT_FACES = ("astronaut", "grace_hopper", "jesper_pedersen")  # the faces of the reference's training data
# The faces of every set made before a third was added (their plan.json records none; docs/DATA.md, *Face*)
TWO_FACES = ("astronaut", "grace_hopper")


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


def neutralise(nf: face.NeutralFace, unsmile: float, gaze: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The photo with teeth inpainted, lips closed, the smile reversed and the irises moved by `gaze`
    (RGB uint8, same size)."""
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
    frame = render.Renderer(base).frame(nf.to_image(shape), np.zeros(2))
    return shift_irises(frame, pts, gaze) if gaze != (0.0, 0.0) else frame


def shift_irises(image: np.ndarray, points_px: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Both irises moved by `shift` pixels inside their eye openings (the lids stay): a smooth warp centred
    on each iris's new place, fading out at the opening's edge."""
    import cv2

    from avpenet.synth import render

    h, w = image.shape[:2]
    d = np.asarray(shift, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx.copy(), yy.copy()
    for opening, iris in zip(render.eye_polygons(), (face.IRIS_RIGHT, face.IRIS_LEFT), strict=True):
        centre = points_px[iris[0], :2] + d
        radius = np.linalg.norm(points_px[list(iris[1:]), :2] - points_px[iris[0], :2], axis=1).mean()
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(points_px[list(opening), :2]).astype(np.int32)], 255)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(np.float32) / 255
        weight = cv2.GaussianBlur(mask, (5, 5), 0) * np.exp(
            -0.5 * ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (1.6 * radius) ** 2
        )
        map_x -= weight * d[0]
        map_y -= weight * d[1]
    return cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@functools.lru_cache(maxsize=len(SOURCES))
def neutral_face(name: str = DEFAULT_SOURCE) -> face.NeutralFace:
    """The neutral source face: the photo (neutralised where needed) and its tracked mesh."""
    return neutral_of(SOURCES[name])


def neutral_of(src: Source) -> face.NeutralFace:
    """neutral_face of any photo, a candidate source included (source_probe.py); not cached."""
    nf = _detect(cropped(src))
    if src.neutralised:
        nf = _detect(neutralise(nf, src.unsmile, src.gaze))
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


def subject_source(seed: int, subject_index: int, faces: tuple[str, ...] = DEFAULT_FACES) -> str:
    """The source photo of a subject, one of `faces`: its own random stream (no other draw of the generator
    moves, so a subject's voice, expressions and the proportions applied to the photo's mesh are the same
    whichever faces are chosen)."""
    names = sorted(faces)
    return names[int(np.random.default_rng([int(seed) & 0xFFFFFFFF, 7, subject_index]).integers(len(names)))]


def plan_faces(plan: dict) -> tuple[str, ...]:
    """The faces a set's subjects were drawn from, as its plan.json says (a set recording none: TWO_FACES)."""
    return tuple(plan.get("faces", TWO_FACES))


def check_faces(faces: tuple[str, ...]) -> tuple[str, ...]:
    """`faces` sorted and without repeats; ValueError naming the known ones for an unknown name."""
    unknown = sorted(set(faces) - set(SOURCES))
    if unknown or not faces:
        which = f"unknown face source(s) {unknown}" if unknown else "no face source given"
        raise ValueError(f"{which}; known: {', '.join(sorted(SOURCES))}")
    return tuple(sorted(set(faces)))


def toned(nf: face.NeutralFace, skin_tone: int | None) -> face.NeutralFace:
    """`nf` with its photo's skin recoloured to Monk Skin Tone `skin_tone` (avpenet.synth.skin; None: as
    photographed), its mesh kept."""
    from avpenet.synth import skin

    if skin_tone is None:
        return nf
    return face.NeutralFace(
        **{**vars(nf), "image": skin.recolour(nf.image, nf.points_px, nf.iod_px, skin_tone)}
    )


def neutral_states(
    faces: tuple[str, ...] = DEFAULT_FACES, skin_tones: tuple[int | None, ...] = (None,)
) -> dict[tuple[str, int | None], dict[str, np.ndarray]]:
    """These sources' neutral faces at each skin tone, {(name, tone): plain arrays}: worker processes need no
    mediapipe run of their own."""
    out = {}
    for name in faces:
        plain = neutral_face(name)
        h, w = plain.image.shape[:2]
        for tone in skin_tones:
            out[name, tone] = {
                "image": toned(plain, tone).image,
                "landmarks": plain.points_px / np.array([w, h, w]),
                "head_pose": plain.head_pose,
            }
    return out
