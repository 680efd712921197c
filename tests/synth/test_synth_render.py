"""The render round trip: a synthetic clip rendered to MP4 and tracked by the REAL FaceLandmarker must give
back landmarks close to the synthetic (reported) track, within the tolerances
measured for it (docs/ARCHITECTURE.md, Platform notes):
neutral frames ≤ 2 % of the inter-ocular distance (IOD), moved regions at apex ≤ 5 % IOD, recovered share
of the driven motion ≥ 0.3, and the recovered motion following the driven intensity (r ≥ 0.9).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from avpenet import contract
from avpenet.features import tracker
from avpenet.features.track import FaceTrack
from avpenet.synth import dataset, face, render

N_FRAMES = 30
RAMP = np.concatenate([np.zeros(6), np.linspace(0, 1, 6), np.ones(8), np.linspace(1, 0, 6), np.zeros(4)])
REGIONS = {  # points, driving action, minimum recovered share
    "brows": (face.RIGHT_BROW + face.LEFT_BROW, "AU4", 0.3),
    "upper_lids": (face.RIGHT_UPPER_LID + face.LEFT_UPPER_LID, "AU43", 0.3),
    "upper_lip": (face.UPPER_LIP, "AU10", 0.5),
}


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """One 3 s clip with AU4 + AU43 (half closed) + AU10 on a ramp and a small head motion."""
    neutral = face.neutral_face()
    rng = np.random.default_rng(5)
    identity = replace(face.make_identity("adult", neutral, rng), shape=neutral.shape.copy())
    acts = {a: np.zeros(N_FRAMES) for a in face.ACTIONS}
    acts["AU4"], acts["AU10"] = RAMP.copy(), RAMP.copy()
    closure = np.stack([RAMP * 0.6, RAMP * 0.6], axis=1)
    t = np.arange(N_FRAMES) / contract.FPS
    pose = np.stack([0.04 * np.sin(2 * np.pi * 0.3 * t), 0.03 * np.sin(2 * np.pi * 0.2 * t), 0.03 * t], 1)
    expr = face.Expression(acts, closure, pose, np.zeros((N_FRAMES, 2)))
    camera = face.render_camera(neutral)
    synthetic = face.synth_track(identity, expr, neutral, camera, rng)
    driven = face.driven_points(identity, expr, camera)
    path = tmp_path_factory.mktemp("render") / "clip.mp4"
    sr = 44_100
    audio = (0.1 * np.sin(2 * np.pi * 400 * np.arange(int(N_FRAMES / contract.FPS * sr)) / sr)).astype(
        np.float32
    )
    render.write_mp4(path, render.render_frames(neutral, driven, closure), audio, sr)
    recovered = tracker.track_video(path.read_bytes())
    return path, synthetic, recovered, driven, neutral


def _iod_error(a: np.ndarray, b: np.ndarray, size: np.ndarray, iod: float) -> np.ndarray:
    return np.linalg.norm((a[..., :2] - b[..., :2]) * size, axis=-1) / iod


def test_mp4_is_h264_at_10_fps_with_the_audio(round_trip):
    path, *_ = round_trip
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert float(video.average_rate) == contract.FPS
        assert sound.sample_rate == 44_100
        assert sum(1 for _ in container.decode(video=0)) == N_FRAMES


def test_tracker_recovers_the_synthetic_landmarks(round_trip):
    _, synthetic, recovered, driven, neutral = round_trip
    assert recovered is not None and recovered.n_frames == N_FRAMES and recovered.face_present.all()
    size = synthetic.image_size.astype(np.float64)
    err = _iod_error(recovered.landmarks, synthetic.landmarks, size, neutral.iod_px)
    assert err[RAMP == 0].mean() <= 0.02  # neutral frames (head motion only)
    apex = RAMP == 1
    for name, (points, _, _) in REGIONS.items():
        assert err[apex][:, list(points)].mean() <= 0.05, name


@pytest.mark.parametrize("region", list(REGIONS))
def test_recovered_motion_share_and_time_course(round_trip, region):
    _, _, recovered, driven, neutral = round_trip
    points, _, min_share = REGIONS[region]
    idx = list(points)
    size = recovered.image_size.astype(np.float64)
    rec = recovered.landmarks[:, idx, :2] * size
    # Remove head motion: express both in the frame of the rigid points (similarity fit per frame).
    rigid = list(face.RIGID_POINTS)
    rec_rigid = recovered.landmarks[:, rigid, :2] * size
    d_rec, d_drv = [], []
    for k in range(N_FRAMES):
        s, r, sh = render._similarity(rec_rigid[k], driven[0, rigid, :2])
        d_rec.append((s * (r @ rec[k].T)).T + sh)
        s, r, sh = render._similarity(driven[k, rigid, :2], driven[0, rigid, :2])
        d_drv.append((s * (r @ driven[k, idx, :2].T)).T + sh)
    d_rec = np.array(d_rec) - np.array(d_rec)[RAMP == 0].mean(axis=0)
    d_drv = np.array(d_drv) - driven[0, idx, :2]
    apex = RAMP == 1
    share = float((d_rec[apex] * d_drv[apex]).sum() / (d_drv[apex] ** 2).sum())
    assert share >= min_share
    direction = d_drv[apex].mean(axis=0)
    curve = (d_rec * direction).sum(axis=(1, 2))
    assert np.corrcoef(curve, RAMP)[0, 1] >= 0.9


def test_blendshapes_rise_with_their_action(round_trip):
    _, _, recovered, *_ = round_trip
    for name in ("browDownLeft", "eyeBlinkLeft", "eyeSquintLeft", "mouthUpperUpLeft"):
        series = recovered.blendshapes[:, face.BS[name]]
        assert np.corrcoef(series, RAMP)[0, 1] >= 0.8, name
    for stuck in ("noseSneerLeft", "cheekSquintLeft"):  # the tracker quirk the synthetic tracks copy
        assert recovered.blendshapes[:, face.BS[stuck]].max() < 0.05


def test_generated_rendered_clip_npz_is_its_tracked_mp4(tmp_path: Path):
    """`avpenet synth --render-video 1` end to end: a rendered clip's .npz (what a privacy-mode upload sends)
    is what the real tracker reports for its MP4, frame for frame."""
    dataset.generate(tmp_path, seed=3, n_subjects=2, render=1, workers=1, progress=False)
    with open(tmp_path / "labels.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["video"])
    stored = FaceTrack.load_npz(tmp_path / row["visual"])
    recovered = tracker.track_video((tmp_path / row["video"]).read_bytes())
    assert recovered is not None and recovered.n_frames == stored.n_frames
    assert stored.face_present.mean() > 0.9
    np.testing.assert_array_equal(stored.face_present, recovered.face_present)
    np.testing.assert_allclose(stored.landmarks, recovered.landmarks, atol=1e-5)
    np.testing.assert_allclose(stored.blendshapes, recovered.blendshapes, atol=1e-5)


def test_the_same_frames_encode_to_the_same_bytes_every_time(tmp_path):
    """x264's AVX-512 code encoded the same small frames differently from call to call on a Zen 4 EPYC (one
    thread, same options), so renders and test clips were not reproducible there; h264_options keeps x264
    to code that is. On a CPU without AVX-512 this passes either way."""
    from skimage import data as images
    from support import testmedia as tm

    from avpenet.synth.render import write_mp4

    frames = np.stack(tm.face_frames(images.astronaut(), 40, size=(160, 160)))
    digests = set()
    for i in range(6):
        path = tmp_path / f"{i}.mp4"
        write_mp4(path, frames)
        digests.add(path.read_bytes())
    assert len(digests) == 1
