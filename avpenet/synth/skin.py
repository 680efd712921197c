"""Darker skin on the same faces: a source photo's skin recoloured to a Monk Skin Tone swatch.

Every source photo shows a light-skinned person (docs/DATA.md, *Face*), and no photo of a darker-skinned
person with a licence that allows rendering was found in a registry package. This is a check, not that
person: the same three faces, lighting, expressions and sound, only the colour of the skin changed, so
`avpenet synth --skin-tone N` and `cli.face_swap_report` measure how the tracker and the model respond to
darker skin colour alone; `--skin-tone photo,6,8,10` draws one of those tones for each subject (training data
with darker skin colour). A darker-skinned person's face shape, how the skin reflects light and how a
camera exposes it are not in it.

The skin (all of the face inside its mesh outline but the whites of the eyes; past the outline, to the
hairline, the ears and down the neck, each pixel weighted by how close its colour is to the face's own skin,
so that hair, clothes and background stay) is moved in CIELAB: each coordinate scaled so that the face's
median skin colour becomes the swatch's, so shading and texture keep their proportions and no pixel's hue
turns over.
"""

from __future__ import annotations

import numpy as np

from avpenet.synth import face

# The Monk Skin Tone Scale's ten swatches, lightest first (Ellis Monk; published by Google under CC BY 4.0).
MONK_SWATCHES = (
    "#f6ede4", "#f3e7db", "#f7ead0", "#eadaba", "#d7bd96",
    "#a07e56", "#825c43", "#604134", "#3a312a", "#292420",
)  # fmt: skip
JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
SAMPLES = face.CHEEKS + (151, 9, 4, 199)  # cheeks, forehead, nose tip, chin: where the skin is measured
WIDEN_IOD = 0.25  # how far past the mesh outline skin is looked for (hairline, ears)
NECK_IOD = 1.0  # how far below the jaw
CHROMA_TOLERANCE = 14.0  # CIELAB a*b* distance from the face's skin at which a pixel's weight halves
FEATHER_PX = 2.0
SCLERA_CHROMA = 0.5  # of the skin's CIELAB chroma: a paler pixel in an eye opening is the eye's white
AS_PHOTOGRAPHED = "photo"  # what `avpenet synth --skin-tone` calls no recolouring (None here)


def check_tones(tones: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """`tones` (None: as photographed) without repeats, as photographed first; ValueError for one off the
    scale or none at all."""
    if not tones:
        raise ValueError("no skin tone given")
    for tone in tones:
        if tone is not None:
            swatch_lab(tone)
    return tuple(sorted(set(tones), key=lambda t: tone_order(tone_name(t))))


def tone_name(tone: int | None) -> str:
    """A tone as `--skin-tone` names it and results are keyed by it: AS_PHOTOGRAPHED, or the swatch number."""
    return AS_PHOTOGRAPHED if tone is None else str(tone)


def tone_order(name: str) -> int:
    """Sort key of a tone's name: as photographed first, then lightest to darkest (MST 6 before MST 10)."""
    return -1 if name == AS_PHOTOGRAPHED else int(name)


def subject_tone(seed: int, subject_index: int, tones: tuple[int | None, ...]) -> int | None:
    """The skin tone of a subject's face, one of `tones`: its own random stream (as sources.subject_source),
    so nothing else a subject is drawn moves with the tones chosen."""
    if len(tones) == 1:
        return tones[0]
    return tones[int(np.random.default_rng([int(seed) & 0xFFFFFFFF, 11, subject_index]).integers(len(tones)))]


def swatch_lab(tone: int) -> np.ndarray:
    """CIELAB (L* 0-100, a*, b*) of Monk Skin Tone `tone` (1-10)."""
    if not 1 <= tone <= len(MONK_SWATCHES):
        raise ValueError(f"skin tone {tone}: the Monk Skin Tone Scale runs from 1 to {len(MONK_SWATCHES)}")
    hexa = MONK_SWATCHES[tone - 1]
    rgb = np.array([[[int(hexa[i : i + 2], 16) for i in (1, 3, 5)]]], np.uint8)
    return _lab(rgb)[0, 0]


def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _rgb(lab: np.ndarray) -> np.ndarray:
    import cv2

    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _fill(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    for poly in polygons:
        cv2.fillPoly(mask, [np.rint(poly).astype(np.int32)], 1)
    return mask.astype(bool)


def _widened(points: np.ndarray, by: float) -> np.ndarray:
    """A polygon pushed out from its centroid by `by` (pixels)."""
    centre = points.mean(axis=0)
    out = points - centre
    return centre + out * (1.0 + by / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-6))


def skin_weight(lab: np.ndarray, points_px: np.ndarray, iod_px: float, ref: np.ndarray) -> np.ndarray:
    """[H, W] weight in [0, 1] of each pixel of a CIELAB image as skin to recolour (see the module); `ref`:
    its skin_reference."""
    import cv2

    from avpenet.synth import render

    xy = points_px[:, :2]
    jaw = xy[list(JAW)]
    neck = np.concatenate([jaw, jaw[::-1] + [0.0, NECK_IOD * iod_px]])
    oval = xy[list(render.FACE_OVAL)]
    region = _fill(lab.shape[:2], [_widened(oval, WIDEN_IOD * iod_px), neck])
    inside = _fill(lab.shape[:2], [oval])
    eyes = whites_of_the_eyes(lab, points_px, ref)
    chroma = np.linalg.norm(lab[..., 1:] - ref[1:], axis=-1)
    weight = 1.0 / (1.0 + (chroma / CHROMA_TOLERANCE) ** 4)  # 1 on skin colour, falling past the tolerance
    weight *= np.clip((lab[..., 0] - 0.35 * ref[0]) / (0.2 * ref[0]), 0.0, 1.0)  # not hair, brows or shadow
    weight = cv2.GaussianBlur((np.where(inside, 1.0, weight) * region).astype(np.float32), (0, 0), FEATHER_PX)
    return np.where(eyes, 0.0, weight)  # a hard edge at the lid margin, where the photo has one


def whites_of_the_eyes(lab: np.ndarray, points_px: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """[H, W] bool: the eye openings' pixels paler than skin (SCLERA_CHROMA). The mesh's eye outline runs
    along the lid margins, which are skin and darken with the lids; a grey or blue iris stays too."""
    import cv2

    from avpenet.synth import render

    openings = _fill(lab.shape[:2], [points_px[list(p), :2] for p in render.eye_polygons()])
    openings = cv2.dilate(openings.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return openings & (np.hypot(lab[..., 1], lab[..., 2]) < SCLERA_CHROMA * np.hypot(ref[1], ref[2]))


def skin_reference(lab: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """The face's skin colour: the median CIELAB over 9x9 patches at SAMPLES."""
    h, w = lab.shape[:2]
    patches = []
    for x, y in np.rint(points_px[list(SAMPLES), :2]).astype(int):
        y0, x0 = np.clip(y - 4, 0, h - 9), np.clip(x - 4, 0, w - 9)
        patches.append(lab[y0 : y0 + 9, x0 : x0 + 9].reshape(-1, 3))
    return np.median(np.concatenate(patches), axis=0)


def recolour(image: np.ndarray, points_px: np.ndarray, iod_px: float, tone: int) -> np.ndarray:
    """`image` (RGB uint8) with its skin moved to Monk Skin Tone `tone`; every other pixel unchanged."""
    target = swatch_lab(tone)
    lab = _lab(image)
    ref = skin_reference(lab, points_px)
    moved = lab * (target / ref)  # ref's a* and b* are positive: skin is never green or blue
    weight = skin_weight(lab, points_px, iod_px, ref)[..., None]
    out = _rgb(lab + weight * (moved - lab))
    return np.where(weight > 0, out, image)
