"""One reader for a dataset row: training (avpenet.data) and the cache decode a clip the way the gateway
does — the MP4 through the real tracker wins over an .npz track of the same clip — and a rendered clip whose
face is never found is reported by the cache and kept, visual modality masked."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from skimage import data as images
from support import testmedia as tm

from avpenet import contract
from avpenet import data as D
from avpenet.features import cache
from avpenet.features.track import FaceTrack


def _write_labels(root, rows):
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=contract.LABEL_COLUMNS)
        writer.writeheader()
        for cid, audio, visual, video in rows:
            writer.writerow({
                "clip_id": cid, "subject_id": "s" + cid, "age_group": "adult", "audio": audio,
                "visual": visual, "video": video, "duration_s": 3.0, "score": 5.0, "rater_1": 5,
                "rater_2": 5, "rater_3": 5, "level": "moderate",
            })  # fmt: skip


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    for sub in ("audio", "visual", "video"):
        (root / sub).mkdir()
    frames = tm.face_frames(images.astronaut(), 30, size=(160, 160))
    (root / "video" / "both.mp4").write_bytes(tm.video_bytes(frames, 10, audio=tm.tone(3.0, 16_000)))
    (root / "video" / "noface.mp4").write_bytes(tm.video_bytes(tm.noise_frames(30), 10))
    (root / "audio" / "noface.wav").write_bytes(tm.audio_bytes(tm.tone(3.0, 16_000), 16_000))
    # an .npz for the same clip that disagrees with the video: 30 frames with no face at all
    FaceTrack.empty(30, (160, 160)).save_npz(root / "visual" / "both.npz")
    _write_labels(
        root,
        [
            ("both", "", "visual/both.npz", "video/both.mp4"),
            ("noface", "audio/noface.wav", "", "video/noface.mp4"),
        ],
    )
    return root


def test_video_wins_over_npz_in_data_and_cache_alike(ds):
    row = D.read_labels(ds)[0]
    live = D.load_clip(ds, row)  # no cache yet: decoded now
    assert live.track is not None and live.track.face_present.mean() > 0.8  # the tracked MP4, not the npz
    assert live.inputs[contract.FRAME_MASK.name].mean() > 0.5
    meta = cache.extract_clip(ds, row)
    assert meta["visual_source"] == "video"
    cached = D.load_clip(ds, row)  # now from the cache: the same inputs and the same track
    for name, arr in live.inputs.items():
        np.testing.assert_allclose(cached.inputs[name], arr, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(cached.track.face_present, live.track.face_present)


def test_tracking_failure_is_counted_named_and_kept(ds):
    manifest = cache.build_cache(ds, workers=1, progress=False)
    assert manifest["tracking_failed"] == ["noface"]
    clip = D.load_clip(ds, [r for r in D.read_labels(ds) if r["clip_id"] == "noface"][0])
    assert not clip.inputs[contract.FRAME_MASK.name].any()  # visual masked, as the gateway masks it
    assert clip.inputs[contract.AUDIO_PRESENT.name].all()  # the clip is still scored from its audio


def test_one_label_reader(tmp_path):
    _write_labels(tmp_path, [("a", "", "", ""), ("a", "", "", "")])
    with pytest.raises(ValueError, match="duplicate clip_id"):
        D.read_labels(tmp_path)
