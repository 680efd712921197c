"""loadtests.track_stride: at stride 1 it is the served tracking; at stride 2 the landmarker sees half the
frames, the others lie between their tracked neighbours, and the copy it writes is a set `avpenet evaluate`
reads (landmarks, no video)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.rendered_set import render_one_clip

from avpenet.features import avclip, cache, tracker
from avpenet.features.track import FaceTrack
from loadtests import track_stride


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One AVPE-Synth clip rendered to MP4 and tracked by the generator's own code path."""
    root = tmp_path_factory.mktemp("track_stride")
    return root, render_one_clip(root)


def test_stride_one_is_the_served_tracking(rendered) -> None:
    root, row = rendered
    got = track_stride.track_every((root / row["video"]).read_bytes(), 1)
    stamped = FaceTrack.load_npz(root / row["visual"])  # what `avpenet synth` wrote from tracker.track_video
    for name in ("landmarks", "blendshapes", "head_pose", "face_present"):
        assert np.array_equal(getattr(got, name), getattr(stamped, name)), name


def test_stride_two_tracks_half_the_frames_and_interpolates_the_rest(rendered, monkeypatch) -> None:
    root, row = rendered
    video = (root / row["video"]).read_bytes()
    full = track_stride.track_every(video, 1)
    skipped: list[int] = []
    real = tracker.FaceTracker.skip_frame
    monkeypatch.setattr(tracker.FaceTracker, "skip_frame", lambda self: skipped.append(1) or real(self))
    half = track_stride.track_every(video, 2)
    n = full.n_frames
    assert half.n_frames == n and n - len(skipped) == len(set(range(0, n, 2)) | {n - 1})
    i = next(i for i in range(1, n - 1, 2) if half.face_present[i - 1 : i + 2].all())
    mid = (half.landmarks[i - 1].astype(np.float64) + half.landmarks[i + 1]) / 2
    assert np.allclose(half.landmarks[i], mid, atol=1e-6)  # between its tracked neighbours
    assert not np.array_equal(half.landmarks[i], full.landmarks[i])  # and not what the landmarker saw there


def test_writes_a_set_evaluate_reads_with_the_strided_tracks(rendered, tmp_path, capsys) -> None:
    root, row = rendered
    out = tmp_path / "S2"
    argv = ["--data", str(root), "--stride", "2", "--out", str(out), "--cpu-clips", "1"]
    assert track_stride.main(argv) == 0
    printed = re.search(r"every frame ([\d.]+), every 2\. frame ([\d.]+) ms", capsys.readouterr().out)
    every, strided = map(float, printed.groups())
    assert every > 0 and strided > 0
    copied = cache.read_labels(out)[0]
    assert copied["video"] == "" and copied["score"] == row["score"]
    wave, track, source = cache.decode_row(out, copied)
    assert source == "npz"
    assert row["audio"] == ""  # this clip's sound is in its MP4 only
    served, _ = avclip.decode_clip((root / row["video"]).read_bytes(), tracker.VideoLimits())
    assert np.array_equal(wave, served)  # written as a WAV of the floats the gateway decodes
    expected = track_stride.track_every((root / row["video"]).read_bytes(), 2)
    assert np.array_equal(track.landmarks, expected.landmarks)
    with pytest.raises(SystemExit) as exc:  # never writes into an existing folder
        track_stride.main(["--data", str(root), "--out", str(out)])
    assert exc.value.code == 2
