"""A render the tracker believes: each source photo, rendered neutral, tracks near neutral, and each driven
action moves its blendshapes monotonically with intensity, through the real FaceLandmarker (IMAGE mode).

Thresholds come from measured renders (docs/DATA.md, "What the tracker reads on the renders"): a step may dip
by at most STEP_SLACK (tracker noise) and the full action must rise by at least MIN_RISE. Another CPU moves
what the tracker reads: the same renders tracked with numpy's and OpenCV's SIMD paths switched off moved a
rise by up to 0.006 (Grace Hopper's browDown: 0.051 here, 0.057 so), so no threshold sits closer than 0.016 to
a measured rise (the smallest margin: the astronaut's talking, 0.046 against 0.03). The geometry checks'
smallest margin is Jesper Pedersen's AU9/10: his upper lip-nose gap shrinks by 0.027 IOD against the 0.015
asked (docs/DATA.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from avpenet import contract
from avpenet.synth import sources
from avpenet.synth.source_probe import NEUTRAL_MAX, OTHERS_MAX, SQUINT_MAX, blend

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


def _track(frames):
    from avpenet.features.tracker import detect_image

    tracks = [detect_image(f) for f in frames]
    assert all(t.face_present[0] for t in tracks), "the tracker lost the rendered face"
    return tracks


@pytest.fixture(scope="module", params=sorted(sources.SOURCES))
def neutral(request):
    return request.param, sources.neutral_face(request.param)


def test_neutral_render_tracks_near_neutral(neutral):
    name, nf = neutral
    b = _track(sources.probe_frames(nf, "AU4", [0.0]))[0].blendshapes[0]
    squint = [contract.BLENDSHAPE_NAMES.index(n) for n in ("eyeSquintLeft", "eyeSquintRight")]
    others = np.delete(b, squint)
    assert others.max() <= OTHERS_MAX, (name, contract.BLENDSHAPE_NAMES[int(np.argmax(np.where(
        np.isin(np.arange(b.size), squint), 0, b)))])  # fmt: skip
    assert b[squint].max() <= SQUINT_MAX  # the tracker's known eyeSquint baseline on neutral faces
    read = {k: blend(b, k) for k in NEUTRAL_MAX}  # mouthSmile, jawOpen, eyeBlink
    assert all(read[k] <= limit for k, limit in NEUTRAL_MAX.items()), read


@pytest.mark.parametrize("probe", sorted(sources.PROBES))
def test_each_action_moves_its_blendshapes_monotonically(neutral, probe):
    name, nf = neutral
    tracks = _track(sources.probe_frames(nf, probe, LEVELS))
    if (name, probe) in GEOMETRY_ONLY:
        a, b, sign = GEOMETRY[probe]
        dist = []
        for t in tracks:
            p = t.landmarks[0][:, :2] * t.image_size
            dist.append(sign * np.linalg.norm(p[a] - p[b]) / np.linalg.norm(p[468] - p[473]))
        assert all(y >= x - GEOMETRY_SLACK for x, y in zip(dist, dist[1:], strict=False)), (name, probe, dist)
        assert dist[-1] - dist[0] >= GEOMETRY_RISE, (name, probe, dist)
        return
    values = [blend(t.blendshapes[0], RESPONSE[probe]) for t in tracks]
    assert all(b >= a - STEP_SLACK for a, b in zip(values, values[1:], strict=False)), (name, probe, values)
    rise = MIN_RISE.get((name, probe), MIN_RISE.get(probe, DEFAULT_RISE))
    assert values[-1] - values[0] >= rise, (name, probe, values)


def test_neonate_proportions_show_in_the_tracked_render(neutral):
    """A neonate subject's face (short lower face) is what the renderer draws and what the tracker reads."""
    from avpenet.features.tracker import detect_image
    from avpenet.synth import face

    name, nf = neutral
    baby = face.make_identity("neonate", nf, np.random.default_rng(1)).shape

    def lower_face(frame) -> float:  # nose tip (1) to chin (152), in inter-ocular distances
        t = detect_image(frame)
        assert t.face_present[0]
        p = t.landmarks[0][:, :2] * t.image_size
        return float(np.linalg.norm(p[1] - p[152]) / np.linalg.norm(p[468] - p[473]))

    adult = lower_face(sources.probe_frames(nf, "AU4", [0.0])[0])
    neonate = lower_face(sources.probe_frames(nf, "AU4", [0.0], shape=baby)[0])
    assert neonate < 0.93 * adult, (name, adult, neonate)
