"""What the FaceLandmarker reads on each source's neutral render and driven actions, and whether it passes.

A render the tracker believes: these are the criteria of tests/synth/test_render_actions.py, which reads them
here.

    python -m avpenet.synth.action_checks [--skin-tone N] [--faces a,b]

With `--skin-tone` the same renders with every face's skin recoloured (avpenet.synth.skin): how the tracker's
reading of each action holds on darker skin colour (docs/DATA.md, *Skin tone*). Exit 0 when every check
passes, 1 when any fails.

Thresholds come from measured renders (docs/DATA.md, "What the tracker reads on the renders"): a step may dip
by at most STEP_SLACK (tracker noise) and the full action must rise by at least its MIN_RISE. Where a face's
blendshape does not answer a small lip movement, the tracked lip geometry is checked instead (GEOMETRY).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from avpenet.synth.source_probe import blend, verdict

LEVELS = (0.0, 0.5, 1.0)
STEP_SLACK = 0.02
MIN_RISE = {"talking": 0.03, ("grace_hopper", "AU4"): 0.03}  # small mouthing jaw; a weak brow (0.051)
DEFAULT_RISE = 0.05
RESPONSE = {  # probe -> the blendshape (Left/Right averaged) that must rise
    "AU4": "browDown",
    "AU6/7": "eyeSquint",
    "AU9/10": "mouthUpperUp",
    "AU43": "eyeBlink",
    "AU25-27": "jawOpen",
    "smile": "mouthSmile",
    "talking": "jawOpen",
    "yawn": "jawOpen",
}
# Grace Hopper's thin, closed lips: mouthUpperUp stays 0 for a 5% IOD lip raise (0.19 only at 3x) and
# jawOpen stays 0 for the small talking jaw; Jesper Pedersen's closed lips give mouthUpperUp 0.01 for the
# lip raise; those are checked on the tracked lip geometry instead
# (GEOMETRY: two landmarks' distance in inter-ocular distances, and whether it must grow or shrink), as
# docs/DATA.md says.
GEOMETRY_ONLY = {("grace_hopper", "AU9/10"), ("grace_hopper", "talking"), ("jesper_pedersen", "AU9/10")}
GEOMETRY = {"AU9/10": (0, 2, -1), "talking": (13, 14, +1)}  # upper lip to nose base; inner lip gap
GEOMETRY_SLACK, GEOMETRY_RISE = 0.002, 0.015  # IOD; measured full moves 0.035 (AU9/10) and 0.036 (talking),
# Jesper Pedersen's AU9/10 0.027


def action_reading(name: str, probe: str, tracks: list) -> tuple[str, list[float], list[str]]:
    """(what was read, its value at each of LEVELS, why it fails: empty when it passes) for the tracked
    renders of one probe on source `name`."""
    if (name, probe) in GEOMETRY_ONLY:
        a, b, sign = GEOMETRY[probe]
        values = []
        for t in tracks:
            p = t.landmarks[0][:, :2] * t.image_size
            values.append(float(sign * np.linalg.norm(p[a] - p[b]) / np.linalg.norm(p[468] - p[473])))
        what, slack, rise = f"geometry {a}-{b} (IOD)", GEOMETRY_SLACK, GEOMETRY_RISE
    else:
        values = [blend(t.blendshapes[0], RESPONSE[probe]) for t in tracks]
        what, slack = RESPONSE[probe], STEP_SLACK
        rise = MIN_RISE.get((name, probe), MIN_RISE.get(probe, DEFAULT_RISE))
    faults = []
    if not all(y >= x - slack for x, y in zip(values, values[1:], strict=False)):
        faults.append(f"falls by more than {slack:g} on a step")
    if values[-1] - values[0] < rise:
        faults.append(f"rises {values[-1] - values[0]:.3f} < {rise:g}")
    return what, values, faults


def _track(frames) -> list | None:
    from avpenet.features.tracker import detect_image

    tracks = [detect_image(f) for f in frames]
    return tracks if all(t.face_present[0] for t in tracks) else None


def check_source(name: str, skin_tone: int | None = None) -> list[tuple[str, str, list[float], list[str]]]:
    """[(check, what was read, values, faults)] of one source: its neutral render, then every probe."""
    from avpenet.synth import sources

    nf = sources.toned(sources.neutral_face(name), skin_tone)
    rows = []
    neutral = _track(sources.probe_frames(nf, "AU4", [0.0]))
    b = None if neutral is None else neutral[0].blendshapes[0]
    rows.append(("neutral", "blendshapes", [], ["face lost"] if b is None else verdict(b)))
    for probe in sorted(sources.PROBES):
        tracks = _track(sources.probe_frames(nf, probe, LEVELS))
        rows.append(
            (probe, "", [], ["face lost"])
            if tracks is None
            else (probe, *action_reading(name, probe, tracks))
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from avpenet.synth import skin, sources

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skin-tone", type=int, default=None, choices=range(1, len(skin.MONK_SWATCHES) + 1), metavar="1-10",
        help="every face's skin recoloured to this Monk Skin Tone first (default: as photographed)",
    )  # fmt: skip
    parser.add_argument(
        "--faces", default=",".join(sorted(sources.SOURCES)), help="comma-separated sources (default: all)"
    )
    args = parser.parse_args(argv)
    failed = 0
    for name in sources.check_faces(tuple(f for f in args.faces.split(",") if f)):
        for check, what, values, faults in check_source(name, args.skin_tone):
            read = "/".join(f"{v:.3f}" for v in values)
            print(f"{name} {check}: {what} {read} {'ok' if not faults else 'FAILS: ' + '; '.join(faults)}")
            failed += bool(faults)
    print(f"{failed} check(s) fail", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
