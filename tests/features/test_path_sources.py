"""Decoders take a file path as well as bytes (training, `avpenet features`, scripts): a path is read into
memory first, because FFmpeg is allowed no protocol, not even `file`, and would refuse to open it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avpenet.features import audio, tracker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "neonate-cry-high.mp4"


def test_audio_from_a_path_equals_audio_from_its_bytes() -> None:
    from_bytes = audio.load_audio(EXAMPLE.read_bytes())
    for source in (EXAMPLE, str(EXAMPLE)):
        np.testing.assert_array_equal(audio.load_audio(source), from_bytes)


def test_video_from_a_path_is_tracked_like_its_bytes() -> None:
    from_path = tracker.track_video(EXAMPLE)
    from_bytes = tracker.track_video(EXAMPLE.read_bytes())
    assert from_path is not None and from_bytes is not None
    np.testing.assert_allclose(from_path.landmarks, from_bytes.landmarks, atol=1e-6)
