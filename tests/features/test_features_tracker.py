"""Real mediapipe FaceLandmarker on a real face photo, and the video decoder's sampling, limits and errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from skimage import data
from support import testmedia as tm

from avpenet import contract, user_errors
from avpenet.errors import FaceModelError, TooLarge, UndecodableMedia, UnsupportedMedia
from avpenet.features import tracker
from avpenet.features.tracker import VideoLimits


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def face_mp4(astronaut) -> bytes:
    return tm.video_bytes(tm.face_frames(astronaut, 50, size=(192, 192)), 25, audio=tm.tone(2.0, 16_000))


def test_model_file_is_verified():
    blob = tracker.model_bytes()
    assert len(blob) == tracker.MODEL_SIZE


def test_model_sha_mismatch_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "face_landmarker.task"
    fake.write_bytes(b"not a model")
    monkeypatch.setenv(tracker.MODEL_ENV, str(fake))
    with pytest.raises(FaceModelError, match="sha256"):
        tracker.model_bytes()


def test_a_face_model_mediapipe_cannot_open_is_one_line_for_a_cli_user(monkeypatch, tmp_path, capsys):
    """A file whose digest the operator pinned (AVPENET_FACE_MODEL_SHA256) but which is no model: MediaPipe's
    RuntimeError became a traceback and exit 1 in `avpenet features`; now one line naming the file, exit 2."""
    fake = tmp_path / "face_landmarker.task"
    fake.write_bytes(b"not a model")
    monkeypatch.setenv(tracker.MODEL_ENV, str(fake))
    monkeypatch.setenv(tracker.MODEL_SHA256_ENV, hashlib.sha256(b"not a model").hexdigest())
    assert user_errors.exit_code("avpenet features", tracker.FaceTracker) == 2
    printed = capsys.readouterr().err.strip().splitlines()[-1]
    assert printed.startswith(f"avpenet features: MediaPipe cannot open face model {fake}")
    monkeypatch.delenv(tracker.MODEL_SHA256_ENV)
    assert user_errors.exit_code("avpenet features", tracker.FaceTracker) == 2  # the digest refused, one line
    assert "has sha256" in capsys.readouterr().err


def test_detect_image_finds_the_astronaut(astronaut):
    track = tracker.detect_image(astronaut)
    assert track.n_frames == 1 and bool(track.face_present[0])
    assert track.landmarks.shape == (1, contract.N_LANDMARKS, 3)
    assert track.image_size.tolist() == [astronaut.shape[1], astronaut.shape[0]]
    # The face is in the upper middle of the photo.
    x, y = track.landmarks[0, :, 0], track.landmarks[0, :, 1]
    assert 0.3 < x.mean() < 0.7 and 0.1 < y.mean() < 0.5
    assert 0.0 < track.blendshapes.max() <= 1.0
    assert track.head_pose[0, 3, 3] == pytest.approx(1.0)
    track.validate()


@pytest.mark.parametrize("image", [np.zeros((240, 320, 3), np.uint8), np.full((8, 8, 3), 128, np.uint8)])
def test_detect_image_without_face(image):
    track = tracker.detect_image(image)
    assert not track.face_present.any()
    assert not track.landmarks.any() and not track.blendshapes.any()


def test_track_video_in_memory(face_mp4):
    track = tracker.track_video(face_mp4)
    assert track.n_frames == 2 * contract.FPS  # 2 s at 25 fps sampled to FPS
    assert track.face_present.mean() > 0.8
    track.validate()
    # The tracked face moves only a few pixels: landmarks are stable across frames.
    present = track.landmarks[track.face_present]
    assert np.abs(present - present.mean(0)).max() < 0.1


def test_video_sampling_by_timestamp():
    # 7 fps → 10 fps: frame k shows the source frame on screen at k / 10 s.
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(14)]  # 2 s
    out = list(tracker.iter_video_frames(tm.video_bytes(frames, 7)))
    assert len(out) == 20
    shown = [round(f.mean() / 10) for f in out]
    assert shown == [int(np.floor(k / 10 * 7 + 1e-6)) for k in range(20)]


def test_video_without_face_gives_empty_mask():
    track = tracker.track_video(tm.video_bytes(tm.noise_frames(20), 10, container="webm"))
    assert track.n_frames == 20 and not track.face_present.any()


def test_audio_only_container_has_no_track():
    assert tracker.track_video(tm.video_bytes([], 10, audio=tm.tone(1.0, 16_000))) is None


def test_limits(face_mp4):
    # what a hospital integrator reads in the 413: the frame size sent, the limit, and what to do
    refused = r"^video frames are \d+x\d+; the limit is 10,000 pixels a frame \(1920x1080 is 2,073,600\): "
    with pytest.raises(TooLarge, match=refused + "send the video at a lower resolution$"):
        tracker.track_video(face_mp4, VideoLimits(max_pixels=100 * 100))
    with pytest.raises(TooLarge):
        tracker.track_video(face_mp4, VideoLimits(max_seconds=1.0))
    with pytest.raises(TooLarge):
        tracker.track_video(face_mp4, VideoLimits(max_frames=5))


def test_bad_bytes(face_mp4):
    with pytest.raises(UnsupportedMedia):
        tracker.track_video(b"\x00" * 200)
    with pytest.raises(UnsupportedMedia):
        tracker.track_video(tm.audio_bytes(tm.tone(1.0, 16_000), 16_000))  # a WAV is not a video
    with pytest.raises(UndecodableMedia):
        tracker.track_video(face_mp4[: len(face_mp4) // 3])
    with pytest.raises(UndecodableMedia):
        tracker.track_video(b"")
