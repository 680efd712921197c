"""`avpenet features --data DIR`: a small hand-made dataset (MP4 with a real face, npz track, audio-only,
a corrupt file) goes through the real decoders and tracker into the cache, and a rerun is a no-op."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage import data
from support import testmedia as tm

from avpenet import contract
from avpenet.features import cache, windows
from avpenet.features.tracker import detect_image
from cli.main import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for sub in ("audio", "visual", "video"):
        (root / sub).mkdir()
    face = data.astronaut()
    (root / "video" / "c1.mp4").write_bytes(
        tm.video_bytes(tm.face_frames(face, 30, size=(160, 160)), 10, audio=tm.tone(3.0, 16_000))
    )
    (root / "audio" / "c2.wav").write_bytes(tm.audio_bytes(tm.tone(4.0, 44_100), 44_100))
    track = detect_image(face)
    from avpenet.features.track import FaceTrack

    FaceTrack.concat([track] * 40).save_npz(root / "visual" / "c2.npz")
    (root / "audio" / "c3.wav").write_bytes(tm.audio_bytes(np.zeros(16_000 * 3, np.float32), 16_000))
    (root / "audio" / "c4.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(64))
    (root / "video" / "c5.mp4").write_bytes(tm.video_bytes(tm.noise_frames(25), 10))
    rows = [
        ("c1", "adult", "", "", "video/c1.mp4"),
        ("c2", "neonate", "audio/c2.wav", "visual/c2.npz", ""),
        ("c3", "neonate", "audio/c3.wav", "", ""),
        ("c4", "adult", "audio/c4.wav", "", ""),
        ("c5", "adult", "", "", "video/c5.mp4"),
    ]
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=contract.LABEL_COLUMNS)
        writer.writeheader()
        for cid, age, a, v, vid in rows:
            writer.writerow({
                "clip_id": cid, "subject_id": "s" + cid, "age_group": age, "audio": a, "visual": v,
                "video": vid, "duration_s": 3.0, "score": 2.0, "rater_1": 2, "rater_2": 2, "rater_3": 2,
                "level": "low",
            })  # fmt: skip
    return root


def test_cli_builds_cache_and_rerun_skips(dataset, capsys):
    assert main(["features", "--data", str(dataset), "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "MP4 via FaceLandmarker: 2" in out.out and "c4" in out.err  # the corrupt WAV is reported
    manifest = cache.build_cache(dataset, workers=1, progress=False)  # second run: nothing to do
    assert manifest["extracted"] == 0 and manifest["skipped_up_to_date"] == 4 and manifest["failed"] == 1
    assert main(["features", "--data", str(dataset), "--workers", "1", "--quiet", "--strict"]) == 1

    clips = cache.load_cache(dataset, ["c1", "c2", "c3", "c5"])
    c1, c2, c3, c5 = clips["c1"], clips["c2"], clips["c3"], clips["c5"]
    assert c1.visual_source == "video" and c1.mask.mean() > 0.8  # the real tracker found the face
    assert c1.wave is not None and abs(c1.wave.size - 3 * contract.SAMPLE_RATE) < 2_000  # audio from the MP4
    assert c2.visual_source == "npz" and c2.features.shape == (40, contract.VISUAL_FEATURE_DIM)
    assert c2.wave.dtype == np.float32 and c2.wave.size == 4 * contract.SAMPLE_RATE  # 44.1 kHz resampled
    assert c3.features is None and not c3.wave.any()  # silence is kept as silence
    assert c5.wave is None and c5.mask.shape == (25,) and not c5.mask.any()  # no face, no audio track
    for clip in clips.values():
        inputs = windows.inputs_from_features(clip.wave, clip.features, clip.mask, clip.age_group)
        for spec in contract.MODEL_INPUTS:
            assert inputs[spec.name].shape[1:] == spec.shape and inputs[spec.name].dtype == spec.numpy_dtype
    with pytest.raises(FileNotFoundError, match="avpenet features"):
        cache.load_cache(dataset)  # c4 failed, so the full cache is incomplete


def test_changed_source_is_recomputed(dataset, tmp_path):
    dataset = Path(shutil.copytree(dataset, tmp_path / "ds"))  # a copy: the module's dataset stays as made
    cache.build_cache(dataset, workers=1, progress=False)
    wav = dataset / "audio" / "c3.wav"
    wav.write_bytes(tm.audio_bytes(tm.tone(2.0, 16_000), 16_000))
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    manifest = cache.build_cache(dataset, workers=1, progress=False)
    assert manifest["extracted"] == 1
    assert cache.load_cache(dataset, ["c3"])["c3"].wave.size == 2 * contract.SAMPLE_RATE


def test_a_row_with_only_a_clip_is_read_in_one_pass_like_the_gateways_clip_upload(dataset, monkeypatch):
    """Row c1 (an MP4 with sound, no separate audio): opened once, as `avclip` reads a `clip` upload, with
    the answers of decoding its sound and its picture separately."""
    from support.opens import count_opens

    from avpenet.features import audio, tracker

    opens = count_opens(monkeypatch)
    row = next(r for r in cache.read_labels(dataset) if r["clip_id"] == "c1")
    wave, track, source = cache.decode_row(dataset, row)
    assert opens["av.open"] == 1 and source == "video"
    mp4 = (dataset / "video" / "c1.mp4").read_bytes()
    np.testing.assert_array_equal(wave, audio.load_audio(mp4))
    separate = tracker.track_video(mp4)
    assert track.face_present.any()
    np.testing.assert_array_equal(track.face_present, separate.face_present)
    np.testing.assert_allclose(track.landmarks, separate.landmarks, atol=1e-5)
