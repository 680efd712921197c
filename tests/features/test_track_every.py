"""`limits.track_every`: the landmarker reads every N-th sampled frame and the last, the frames between are
interpolated, and the gateway's clip path serves exactly that (what loadtests/track_stride.py measured).

The frames the landmarker reads are tracked as by a landmarker that skipped the others (each skipped frame
still moves the VIDEO-mode timestamp one step); a frame between two faces is the straight line between them,
and one next to a frame without a face has none. Every frame (1) stays the default and tracks as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from avpenet.features import avclip, tracker
from preprocess_service.settings import Limits

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARRAYS = ("landmarks", "blendshapes", "head_pose")


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return (EXAMPLES / "neonate-cry-high.mp4").read_bytes()


@pytest.fixture(scope="module")
def frames(mp4: bytes) -> list[np.ndarray]:
    return list(tracker.iter_video_frames(mp4))


def _read_by_hand(frames: list[np.ndarray], every: int) -> tuple[list[int], list]:
    """The frames a stride reads, each tracked on its own, the others skipped: (indices, one-frame tracks)."""
    read = sorted({*range(0, len(frames), every), len(frames) - 1})
    tracks = []
    with tracker.FaceTracker() as face_tracker:
        for i, rgb in enumerate(frames):
            if i in read:
                tracks.append(face_tracker.track_frames([rgb]))
            else:
                face_tracker.skip_frame()
    return read, tracks


def test_every_frame_is_the_default_and_tracks_as_one_frame_at_a_time(mp4, frames):
    assert Limits().track_every == 1 and tracker.VideoLimits().track_every == 1
    served = tracker.track_video(mp4)
    read, by_hand = _read_by_hand(frames, 1)
    assert read == list(range(len(frames)))
    for name in (*ARRAYS, "face_present"):
        joined = np.concatenate([getattr(t, name) for t in by_hand])
        np.testing.assert_array_equal(getattr(served, name), joined, err_msg=name)


def test_every_third_frame_reads_those_frames_and_interpolates_between(mp4, frames):
    _, clip_track = avclip.decode_clip(mp4, tracker.VideoLimits(track_every=3))
    read, by_hand = _read_by_hand(frames, 3)
    assert (len(frames) - 1) % 3, "the example's last frame should fall between two strides (it is read)"
    assert clip_track.n_frames == len(frames) and clip_track.face_present.all()
    for i, one in zip(read, by_hand, strict=True):  # the read frames: as the landmarker gave them
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(clip_track, name)[i], getattr(one, name)[0], err_msg=name)
    for a, b in zip(read, read[1:], strict=False):  # between them: the straight line
        for i in range(a + 1, b):
            w = (i - a) / (b - a)
            for name in ARRAYS:
                arr = getattr(clip_track, name)
                np.testing.assert_allclose(arr[i], (1 - w) * arr[a] + w * arr[b], rtol=0, atol=1e-6)
    moved = np.abs(np.diff(clip_track.landmarks, axis=0)).max()
    assert moved > 0  # a face that moves: the interpolation is not comparing constants


def test_a_frame_next_to_one_without_a_face_has_no_face(frames):
    blank = np.zeros_like(frames[0])
    clip = [frames[0], frames[1], frames[2], blank, frames[4], frames[5], frames[6]]
    with tracker.FaceTracker() as face_tracker:
        track = face_tracker.track_frames(clip, every=3)  # reads 0, 3 (no face) and 6
    assert track.face_present.tolist() == [True, False, False, False, False, False, True]
    assert not track.landmarks[1:6].any()


def test_the_gateway_setting_reaches_the_tracker_and_refuses_unmeasured_strides(mp4, monkeypatch):
    from preprocess_service import extract as extract_module
    from preprocess_service.protocol import MediaPart, ScoreRequest

    seen: list[int] = []
    real = avclip.decode_clip

    def spy(source, limits, **kwargs):
        seen.append(limits.track_every)
        return real(source, limits, **kwargs)

    monkeypatch.setattr(avclip, "decode_clip", spy)
    extract_module.extract(ScoreRequest(clip=MediaPart(data=mp4, filename="c.mp4")), Limits(track_every=2))
    assert seen == [2]
    for bad in (0, 4):
        with pytest.raises(pydantic.ValidationError):
            Limits(track_every=bad)
    with tracker.FaceTracker() as face_tracker, pytest.raises(ValueError, match="every must be 1 or more"):
        face_tracker.track_frames([], every=0)


def test_a_replica_tracking_fewer_frames_says_so_at_start(caplog):
    from preprocess_service.deployments import announce_tracking

    with caplog.at_level("WARNING", logger="avpenet.features"):
        announce_tracking(Limits())
        assert not caplog.records  # every frame: what the figures describe, nothing to say
        announce_tracking(Limits(track_every=3))
    (record,) = caplog.records
    assert "track_every=3" in record.getMessage() and "evaluated on every frame" in record.getMessage()
