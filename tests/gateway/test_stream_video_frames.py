"""`avpenet monitor` reads a video's frames as it sends them (replay.VideoFrames), not into a list: a list
held every decoded frame (60 s of 720p: 1.7 GB peak RSS; an hour about 100 GB)."""

from __future__ import annotations

import numpy as np
import pytest
from support import testmedia

from avpenet.features import tracker
from preprocess_service.stream.replay import Recording, VideoFrames

LIMITS = tracker.VideoLimits()


def _video() -> bytes:
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(12)]  # a brightness per frame
    return testmedia.video_bytes(frames, 10)


def test_the_frames_are_the_decoders_in_order_and_again_after_a_step_back():
    data = _video()
    held = list(tracker.iter_video_frames(data, LIMITS))
    frames = VideoFrames(data, LIMITS)
    assert len(frames) == len(held) == 12
    for k in (0, 1, 1, 2, 5, 11):  # in order, one read twice (the resume's first tick), a skip ahead
        np.testing.assert_array_equal(frames[k], held[k])
    for k in (3, 4):  # behind the last read: a resume from an earlier tick decodes again
        np.testing.assert_array_equal(frames[k], held[k])
    with pytest.raises(IndexError):
        frames[12]
    assert Recording(frames=frames).mode == "video" and Recording(frames=frames).n_frames == 12
