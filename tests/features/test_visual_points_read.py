"""frame_features reads only the ~100 landmarks it uses (visual._READ), and its answer is the whole track's.

Converting, cleaning and scaling all 478 points of a 60-s track (600 frames) was most of its visual
features' cost, in the gateway and in training alike. These tests keep the gathered computation exact: the
features and the mask equal, bit for bit, those of the computation on every point (the reference below,
the function as it was before the gathering), including the two checks that do read every point (a face is
present, a frame is still).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpenet import contract
from avpenet.features import faceframe, visual
from avpenet.features.track import FaceTrack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _reference(track: FaceTrack) -> tuple[np.ndarray, np.ndarray]:
    """frame_features computed on all 478 points of every frame (the layout from visual._assemble)."""
    with np.errstate(over="ignore", invalid="ignore"):  # it turns the Inf test points too; they are unread
        return _on_every_point(track)


def _on_every_point(track: FaceTrack) -> tuple[np.ndarray, np.ndarray]:
    v = visual
    size, known = v._image_size(track)
    lm3 = np.nan_to_num(np.asarray(track.landmarks, np.float64))
    lm = lm3[..., :2]
    aligned, px_per_iod = faceframe.align(lm * size)
    aligned = aligned[:, v._SUBSET]
    pose = np.nan_to_num(faceframe.head_pose_angles(np.nan_to_num(track.head_pose)))
    present = np.asarray(track.face_present, bool) & np.any(lm != 0, axis=(1, 2))
    err = np.mean(np.linalg.norm(aligned - faceframe.template()[v._SUBSET], axis=-1), axis=1)
    sub = lm[:, v._SUBSET]
    in_frame = np.mean(np.all((sub >= 0) & (sub <= 1), axis=-1), axis=1)
    usable = present & (in_frame >= v.MIN_IN_FRAME) & (np.abs(pose[:, 0]) <= v.MAX_YAW)
    usable &= (err <= v.MAX_SHAPE_ERROR) & (px_per_iod >= (v.MIN_IOD_PX if known else v.MIN_IOD_NORM))
    usable &= ~_still_runs(lm, present)
    frontal = faceframe.align3d(lm3 * np.array([*size, size[0]]))
    return v._assemble(track, aligned, v._geometry(frontal), pose, usable)


def _still_runs(lm: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The module doc's still-run rule, frame by frame on every point: runs of at least FROZEN_MIN_FRAMES
    present frames each within FROZEN_TOLERANCE of the one before, their first frame kept after a face."""
    frozen, t = np.zeros(len(lm), bool), 0
    while t < len(lm):
        end = t + 1
        while present[t] and end < len(lm) and present[end]:
            if np.abs(lm[end] - lm[end - 1]).max() > visual.FROZEN_TOLERANCE:
                break
            end += 1
        if present[t] and end - t >= visual.FROZEN_MIN_FRAMES:
            frozen[t + 1 : end] = True
            frozen[t] = not (t > 0 and present[t - 1])
        t = end
    return frozen


def _example() -> FaceTrack:
    return FaceTrack.load_npz(EXAMPLES / "adult-S0003-C02.npz")


def _long() -> FaceTrack:
    """A 60-s track: the example's frames repeated, with tracker-like jitter so no stretch is frozen."""
    track = FaceTrack.concat([_example()] * 11)
    keep = slice(0, 60 * contract.FPS)
    track = FaceTrack(**{k: (v if k == "image_size" else v[keep]) for k, v in track.arrays().items()})
    track.landmarks += np.random.default_rng(0).normal(0, 2e-4, track.landmarks.shape).astype(np.float32)
    return track


def _unread() -> np.ndarray:
    others = np.ones(contract.N_LANDMARKS, bool)
    others[visual._READ] = False
    return np.flatnonzero(others)


def _edits() -> dict[str, FaceTrack]:
    base, unread = _long(), _unread()
    cases = {"example": _example(), "long": base}

    nonfinite = FaceTrack.concat([base])
    nonfinite.landmarks[3, unread[:5], 0] = np.nan  # unread points: must change nothing
    nonfinite.landmarks[4, unread[5:9], 1] = np.inf
    nonfinite.landmarks[5, visual._READ[:3], 0] = np.nan  # read points: cleaned to 0 as before
    nonfinite.blendshapes[7, :4] = np.nan
    cases["nonfinite"] = nonfinite

    only_unread = FaceTrack.concat([base])
    only_unread.landmarks[10:14] = 0.0  # every point zero but one unread point: a face is still present
    only_unread.landmarks[12, unread[0], :2] = 0.5
    cases["only unread points set"] = only_unread

    frozen = FaceTrack.concat([_example()] * 2)
    frozen.landmarks[:] = frozen.landmarks[0]
    cases["frozen"] = frozen
    moving = FaceTrack.concat([frozen])
    moving.landmarks[:, unread[0], 0] += 1e-3 * np.arange(len(moving.landmarks))  # only an unread point moves
    cases["frozen but one unread point moves"] = moving
    still = FaceTrack.concat([base])
    still.landmarks[100:140] = still.landmarks[100]  # the device repeats one frame for 4 s
    still.landmarks[300:305] = still.landmarks[300]  # a short still: not frozen
    still.face_present[400] = False
    still.landmarks[401:420] = still.landmarks[401]  # a still run right after a frame without a face
    cases["still runs mid-track"] = still

    unknown = FaceTrack.concat([base])
    unknown.image_size = np.zeros(2, np.int32)
    cases["unknown image size"] = unknown

    lost = FaceTrack.concat([base])
    lost.face_present[::7] = False
    lost.landmarks[::5] = 0.0
    lost.landmarks[20:40, :, 0] += 0.6  # partly off the frame
    cases["lost and off-frame"] = lost
    return cases


@pytest.mark.parametrize("case", sorted(_edits()))
def test_features_equal_the_computation_on_every_point(case):
    track = _edits()[case]
    feats, mask = visual.frame_features(track)
    want_feats, want_mask = _reference(track)
    assert np.array_equal(mask, want_mask), case
    assert np.array_equal(feats, want_feats), case
    assert np.array_equal(visual.usable_frames(track), want_mask.astype(bool)), case


def test_the_edge_cases_reach_both_answers():
    """The edits above are not vacuous: frozen tracks are refused, moving and unread-only ones are not."""
    cases = _edits()
    assert not visual.usable_frames(cases["frozen"]).any()
    assert visual.usable_frames(cases["frozen but one unread point moves"]).all()
    usable = visual.usable_frames(cases["still runs mid-track"])
    assert usable[100] and not usable[101:140].any() and usable[300:305].all() and not usable[400:420].any()
    track = cases["only unread points set"]
    read = np.asarray(track.landmarks)[:, visual._READ, :2].astype(np.float64)
    present = visual._any_point_set(track, read)
    assert present[12] and not present[10] and present[9]
    assert 0 < visual.usable_frames(cases["lost and off-frame"]).mean() < 1
