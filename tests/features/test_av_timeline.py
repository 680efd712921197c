"""Sound stays beside the face shown with it: a clip's audio and video are put on one timeline by their
timestamps (a track that starts late is led in; a hole in the audio's timestamps is silence; an overlap is
trimmed), so the wave's second n and the face track's second n are the same moment of the recording."""

from __future__ import annotations

import functools
import io
from fractions import Fraction

import av
import numpy as np
import pytest
from skimage import data as images
from support import testmedia as tm

from avpenet import contract
from avpenet.errors import TooLarge
from avpenet.features import audio, avaudio, avclip, media, tracker
from avpenet.features.track import FaceTrack

LIMITS = tracker.VideoLimits(max_seconds=20)
SR = contract.SAMPLE_RATE
SOUND_S = 3.0


@functools.cache
def _clip(container: str = "mp4", **timing) -> bytes:
    frames = tm.face_frames(images.astronaut(), 4 * contract.FPS, size=(160, 160))
    sound = tm.tone(SOUND_S, SR, freq=500.0)
    return tm.video_bytes(frames, contract.FPS, audio=sound, container=container, **timing)


def _loud(wave: np.ndarray, at_s: float, until_s: float) -> float:
    """RMS of the wave between two times (the tone is 0.3 peak; a silence is 0)."""
    part = wave[int(at_s * SR) : int(until_s * SR)]
    return float(np.sqrt(np.mean(part.astype(np.float64) ** 2)))


@pytest.mark.parametrize("container", ["mp4", "webm", "matroska"])
def test_audio_that_starts_late_is_led_in_with_silence(container):
    wave, track = avclip.decode_clip(_clip(container, audio_start_s=1.0), LIMITS, max_audio_seconds=20)
    aligned_wave, aligned_track = avclip.decode_clip(_clip(container), LIMITS, max_audio_seconds=20)
    assert wave.size / SR == pytest.approx(aligned_wave.size / SR + 1.0, abs=0.07)
    assert _loud(wave, 0.0, 0.9) < 0.01 < 0.1 < _loud(wave, 1.1, 3.9)
    np.testing.assert_array_equal(track.face_present, aligned_track.face_present)


@pytest.mark.parametrize("container", ["mp4", "webm", "matroska"])
def test_video_that_starts_late_is_led_in_with_frames_without_a_face(container):
    wave, track = avclip.decode_clip(_clip(container, video_start_s=1.0), LIMITS, max_audio_seconds=20)
    aligned_wave, aligned_track = avclip.decode_clip(_clip(container), LIMITS, max_audio_seconds=20)
    lead = contract.FPS  # one second of frames
    assert track.n_frames == aligned_track.n_frames + lead
    assert not track.face_present[:lead].any()
    np.testing.assert_array_equal(track.face_present[lead:], aligned_track.face_present)
    np.testing.assert_allclose(track.blendshapes[lead:], aligned_track.blendshapes, atol=1e-5)
    np.testing.assert_array_equal(wave, aligned_wave)


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_a_hole_in_the_audio_timestamps_is_silence_and_what_follows_keeps_its_time(container):
    wave = audio.load_audio(_clip(container, audio_jump=(1.0, 0.5)))
    assert wave.size / SR == pytest.approx(SOUND_S + 0.5, abs=0.07)
    assert _loud(wave, 0.1, 0.9) > 0.1
    assert _loud(wave, 1.1, 1.45) < 0.01  # the hole: 1.0 s (plus up to one AAC frame) to 1.5 s
    assert _loud(wave, 1.6, 3.4) > 0.1


class _Packet:
    """A demuxed packet that decodes to given frames (FFmpeg's muxers refuse to write timestamps that go
    back, which some recorders' files still hold)."""

    def __init__(self, *frames: av.AudioFrame) -> None:
        self.frames = frames

    def decode(self) -> tuple[av.AudioFrame, ...]:
        return self.frames


def _frame(at_s: float, seconds: float, rate: int, freq: float = 500.0) -> av.AudioFrame:
    samples = tm.tone(seconds, rate, freq=freq)[None, :].astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout="mono")
    frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), int(round(at_s * rate))
    return frame


def test_audio_timestamps_that_go_back_are_trimmed_not_played_twice():
    rate = 16_000
    first, second = _frame(0.0, 1.5, rate), _frame(1.0, 1.5, rate, freq=800.0)  # the second repeats 0.5 s
    wave = _decode((first, second), (_frame(2.5, 0.5, rate),))
    assert wave.size / rate == pytest.approx(3.0, abs=0.001)
    np.testing.assert_array_equal(wave[: int(1.5 * rate)], first.to_ndarray()[0])  # the first whole
    np.testing.assert_array_equal(
        wave[int(1.5 * rate) : int(2.5 * rate)], second.to_ndarray()[0][rate // 2 :]
    )


def test_tracks_that_start_together_are_not_moved():
    wave, track = avclip.decode_clip(_clip("mp4"), LIMITS, max_audio_seconds=20)
    assert track.n_frames == 4 * contract.FPS and track.face_present[0]
    assert wave.size / SR == pytest.approx(SOUND_S, abs=0.07) and _loud(wave, 0.0, 0.5) > 0.1


def test_a_hole_that_takes_the_audio_past_its_limit_is_refused_before_it_is_filled():
    with pytest.raises(TooLarge, match="limit is 3 s"):
        audio.load_audio(_clip("matroska", audio_jump=(1.0, 2.0)), max_seconds=3)


def _decode(*packets: tuple[av.AudioFrame, ...]) -> np.ndarray:
    with av.open(io.BytesIO(_clip("matroska"))) as container:
        track = avaudio.AvAudio.of(container, "ebml", 600.0)
        for frames in packets:
            track.feed(_Packet(*frames))
        wave, _ = track.finish()
    return wave


@pytest.mark.parametrize("bad_at_s", [30.0, -50.0, 100_000.0])
def test_one_corrupt_timestamp_is_a_break_not_a_hole_and_no_later_frame_is_lost(bad_at_s):
    """Before: a frame stamped 30 s ahead made every later (correct) frame an overlap, cut away (0.7 s of
    19 s kept); one stamped -50 s left a trim that ate the next frames; 100,000 s ahead was a 413."""
    rate = 16_000
    frames = [_frame(i * 0.5, 0.5, rate) for i in range(8)]
    frames[3] = _frame(bad_at_s, 0.5, rate)
    wave = _decode(*[(f,) for f in frames])
    assert wave.size == 8 * rate // 2  # every frame's samples, no silence, nothing trimmed
    assert _loud(wave, 0.0, 4.0) > 0.1


def test_a_tiny_file_cannot_decode_to_much_more_silence_than_sound():
    """Forty 64-ms frames each 4 s after the last (a 17-KB file could fill 590 s of silence at 192 kHz,
    1.4 GB): holes are filled only while the silence stays within the sound plus media.TRACK_BREAK_S."""
    rate = 16_000
    wave = _decode(*[(_frame(i * 4.0, 0.064, rate),) for i in range(40)])
    sound_s = 40 * 0.064
    assert sound_s < wave.size / rate <= 2 * sound_s + media.TRACK_BREAK_S + 4.0


@pytest.mark.parametrize(("audio_start", "video_start"), [(30.0, 0.0), (0.0, 30.0)])
def test_a_lead_in_that_takes_the_clip_past_its_limit_is_refused(audio_start, video_start):
    """Checked where the lead-in is made, not only by the container's declared duration (which a file may
    lack or understate)."""
    wave, track = np.zeros(3 * SR, np.float32), FaceTrack.empty(3 * contract.FPS)
    with pytest.raises(TooLarge, match="limit"):
        avclip._line_up(wave, audio_start, track, video_start, 20.0, LIMITS)
    moved_wave, moved_track = avclip._line_up(wave, audio_start / 10, track, video_start / 10, 20.0, LIMITS)
    assert moved_wave.size + moved_track.n_frames * SR // contract.FPS == 9 * SR


def test_a_lead_in_within_the_duration_grace_is_cut_to_the_limit():
    """A 2.0-s clip (the limit) whose picture starts 0.2 s after its sound: refused 413 before, while the
    same lengths without the lead-in were cut to the limit."""
    wave, track = np.zeros(2 * SR, np.float32), FaceTrack.empty(2 * contract.FPS)
    limits = tracker.VideoLimits(max_seconds=2.0)
    _, led = avclip._line_up(wave, 0.0, track, 0.2, 2.0, limits)
    assert led.n_frames == limits.frame_limit == 20 and not led.face_present.any()
