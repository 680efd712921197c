"""Whether a candidate face photo can become a source: its neutral render, as the real tracker reads it.

    python -m avpenet.synth.source_probe PHOTO --crop X0,Y0,SIDE --unsmile 0,2,6 [--close-mouth --gaze=DX,DY]

A source photo must render neutral (tests/synth/test_render_actions.py: `mouthSmile`, `jawOpen` <= 0.1,
`eyeBlink` <= 0.15, every other blendshape but `eyeSquint` <= 0.3), or every rendered frame, a high-pain cry
included, carries the photo's expression. For each smile reversal it makes the photo neutral as
`sources.neutral_face` does (with the lips closed for an open mouth, and the irises moved for a sideways
gaze, when asked) and prints what the FaceLandmarker reads on the neutral render, and whether that passes.
docs/DATA.md, *Face*, records the photos tried this way.
"""

from __future__ import annotations

import argparse

import numpy as np

from avpenet import contract

# The neutral test of tests/synth/test_render_actions.py, which reads these.
NEUTRAL_MAX = {"mouthSmile": 0.1, "jawOpen": 0.1, "eyeBlink": 0.15}
OTHERS_MAX, SQUINT_MAX = 0.3, 0.6


def blend(b: np.ndarray, name: str) -> float:
    """A blendshape by its base name, Left/Right averaged."""
    names = [n for n in (name, name + "Left", name + "Right") if n in contract.BLENDSHAPE_NAMES]
    return float(np.mean([b[contract.BLENDSHAPE_NAMES.index(n)] for n in names]))


def verdict(b: np.ndarray) -> list[str]:
    """What keeps the blendshapes `b` of a neutral render from passing; empty when they pass."""
    faults = [f"{k} {blend(b, k):.2f} > {v}" for k, v in NEUTRAL_MAX.items() if blend(b, k) > v]
    for i, name in enumerate(contract.BLENDSHAPE_NAMES):
        limit = SQUINT_MAX if name.startswith("eyeSquint") else OTHERS_MAX
        if b[i] > limit:
            faults.append(f"{name} {b[i]:.2f} > {limit}")
    return faults


def probe(
    photo: np.ndarray,
    crop: tuple[int, int, int],
    unsmile: float,
    close_mouth: bool = False,
    gaze: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The tracked blendshapes of the photo's neutral render after reversing `unsmile` of smile."""
    from avpenet.features.tracker import detect_image
    from avpenet.synth import sources

    src = sources.Source("candidate", lambda: photo, crop, unsmile, open_mouth=close_mouth, gaze=gaze)
    nf = sources.neutral_of(src)
    return detect_image(sources.probe_frames(nf, "AU4", [0.0])[0]).blendshapes[0]


def main(argv: list[str] | None = None) -> int:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", help="an image file (any format OpenCV reads)")
    parser.add_argument("--crop", required=True, help="X0,Y0,SIDE: the square around the face, in pixels")
    parser.add_argument("--unsmile", default="0", help="comma-separated smile reversals to try")
    parser.add_argument("--close-mouth", action="store_true", help="close an open mouth (teeth inpainted)")
    parser.add_argument("--gaze", default="0,0", help="DX,DY: move both irises (pixels of the 384-px crop)")
    args = parser.parse_args(argv)
    bgr = cv2.imread(args.photo, cv2.IMREAD_COLOR)
    if bgr is None:
        parser.error(f"{args.photo}: not an image OpenCV can read")
    crop = tuple(int(v) for v in args.crop.split(","))
    if len(crop) != 3:
        parser.error("--crop is X0,Y0,SIDE")
    gaze = tuple(float(v) for v in args.gaze.split(","))
    if len(gaze) != 2:
        parser.error("--gaze is DX,DY")
    passed = False
    for unsmile in (float(v) for v in args.unsmile.split(",")):
        b = probe(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), crop, unsmile, args.close_mouth, gaze)  # type: ignore[arg-type]
        faults = verdict(b)
        passed |= not faults
        read = ", ".join(f"{k} {blend(b, k):.2f}" for k in ("mouthSmile", "jawOpen", "browDown", "eyeBlink"))
        print(
            f"unsmile {unsmile:g}: {read}; "
            + ("neutral" if not faults else "not neutral: " + "; ".join(faults))
        )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
