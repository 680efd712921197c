"""A clip (one container with sound and picture) is opened once and demuxed once, with the same answers as
decoding its audio and its video separately: the same wave, the same face track, the same refusals."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from skimage import data as images
from support import testmedia as tm
from support.opens import count_opens

from avpenet import contract
from avpenet.errors import InputError, TooLarge
from avpenet.features import audio, avclip, tracker

LIMITS = tracker.VideoLimits(max_seconds=20)


@functools.cache
def _clip(container: str = "mp4", audio_track: bool = True, seconds: float = 2.0) -> bytes:
    frames = tm.face_frames(images.astronaut(), int(seconds * contract.FPS), size=(160, 160))
    sound = tm.tone(seconds, contract.SAMPLE_RATE, freq=500.0) if audio_track else None
    return tm.video_bytes(frames, contract.FPS, audio=sound, container=container)


def _separately(data: bytes, max_audio_seconds: float = 20.0):
    return audio.load_audio(data, max_seconds=max_audio_seconds), tracker.track_video(data, LIMITS)


def _assert_same_track(one, other) -> None:
    assert (one is None) == (other is None)
    if one is not None:
        np.testing.assert_array_equal(one.face_present, other.face_present)
        np.testing.assert_allclose(one.landmarks, other.landmarks, atol=1e-5)
        np.testing.assert_allclose(one.blendshapes, other.blendshapes, atol=1e-5)


@pytest.fixture
def opens(monkeypatch) -> dict[str, int]:
    """How many containers FFmpeg opened and how many MP4 sample-table walks ran."""
    return count_opens(monkeypatch)


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_a_clip_is_opened_once_and_gives_what_two_passes_give(container, opens):
    data = _clip(container)
    wave, track = avclip.decode_clip(data, LIMITS, max_audio_seconds=20)
    assert opens["av.open"] == 1
    assert opens["sample tables"] == (1 if container == "mp4" else 0)
    assert track is not None and track.face_present.any() and wave is not None
    reference_wave, reference_track = _separately(data)
    assert opens["av.open"] == 3  # the separate calls open it twice (what the request path did)
    np.testing.assert_array_equal(wave, reference_wave)
    _assert_same_track(track, reference_track)


def test_a_clip_without_sound_or_without_picture_is_read_once_too(opens):
    silent = _clip(audio_track=False)
    wave, track = avclip.decode_clip(silent, LIMITS)
    assert wave is None and track is not None and opens["av.open"] == 1
    sound_only = tm.video_bytes([], contract.FPS, audio=tm.tone(2.0, contract.SAMPLE_RATE))
    wave, track = avclip.decode_clip(sound_only, LIMITS)
    assert track is None and opens["av.open"] == 2
    np.testing.assert_array_equal(wave, audio.load_audio(sound_only))


def test_a_damaged_tail_keeps_the_same_start_of_each_track():
    data = _clip(seconds=3.0)
    cut = data[: len(data) * 3 // 4]  # moov at the end is lost: both ways refuse it the same way
    with pytest.raises(InputError) as separate:
        _separately(cut)
    with pytest.raises(type(separate.value), match=re.escape(str(separate.value))):
        avclip.decode_clip(cut, LIMITS, max_audio_seconds=20)
    webm = _clip("webm", seconds=3.0)  # clusters in order: a cut keeps a decodable start
    cut = webm[: len(webm) * 3 // 4]
    wave, track = avclip.decode_clip(cut, LIMITS, max_audio_seconds=20)
    reference_wave, reference_track = _separately(cut)
    np.testing.assert_array_equal(wave, reference_wave)
    _assert_same_track(track, reference_track)


def test_limits_and_refusals_are_those_of_the_separate_decoders():
    data = _clip(seconds=2.0)
    with pytest.raises(TooLarge, match="audio lasts 2.0 s; the limit is 1 s"):
        avclip.decode_clip(data, LIMITS, max_audio_seconds=1.0)
    with pytest.raises(TooLarge, match="video lasts"):
        avclip.decode_clip(data, tracker.VideoLimits(max_seconds=1.0), max_audio_seconds=20)
    wav = tm.audio_bytes(tm.tone(2.0, contract.SAMPLE_RATE), contract.SAMPLE_RATE)
    with pytest.raises(InputError) as separate:
        _separately(wav)
    with pytest.raises(type(separate.value), match=re.escape(str(separate.value))):
        avclip.decode_clip(wav, LIMITS)  # WAV content sent as a clip: no video container


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_a_clip_exactly_as_long_as_the_limit_is_read_and_cut_to_it(container):
    """AAC pads its last frame (an MP4's 2.0 s decode to 2.05 s) and a WebM's duration covers its Opus track:
    both were refused at a 2-s limit ("audio lasts 2 s; the limit is 2 s", "video lasts 2 s ..."). Within
    media.DURATION_GRACE_S the sound is cut to the limit; 0.6 s more is still refused."""
    wave, track = avclip.decode_clip(_clip(container, seconds=2.0), tracker.VideoLimits(max_seconds=2.0),
                                     max_audio_seconds=2.0)  # fmt: skip
    assert 1.9 * contract.SAMPLE_RATE < wave.size <= 2.0 * contract.SAMPLE_RATE and track.n_frames == 20
    assert audio.load_audio(_clip(container, seconds=2.0), max_seconds=2.0).size == wave.size
    with pytest.raises(TooLarge, match="the limit is 2 s"):
        avclip.decode_clip(_clip(container, seconds=2.6), tracker.VideoLimits(max_seconds=2.0),
                           max_audio_seconds=2.0)  # fmt: skip


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_a_video_a_little_past_the_limit_is_cut_to_it_as_its_sound_is(container):
    """A phone's 600.03-s clip was a 413 for its picture while its sound was cut to 600 s: the video had no
    grace. Now both are cut within media.DURATION_GRACE_S; past it both are refused."""
    limits = tracker.VideoLimits(max_seconds=2.0)
    wave, track = avclip.decode_clip(_clip(container, seconds=2.3), limits, max_audio_seconds=2.0)
    assert track.n_frames == 20 and wave.size == 2 * contract.SAMPLE_RATE
    assert tracker.track_video(_clip(container, seconds=2.3), limits).n_frames == 20
    with pytest.raises(TooLarge, match="limit"):
        tracker.track_video(_clip(container, seconds=2.6), limits)


def test_the_audio_is_read_to_its_end_even_when_the_video_sampler_stops_early(monkeypatch):
    data = _clip(seconds=2.0)
    real = tracker.sample_frames

    def first_two(*args, **kwargs):
        frames = real(*args, **kwargs)
        yield next(frames)
        yield next(frames)

    monkeypatch.setattr(tracker, "sample_frames", first_two)
    wave, track = avclip.decode_clip(data, LIMITS, max_audio_seconds=20)
    assert track.n_frames == 2
    np.testing.assert_array_equal(wave, audio.load_audio(data))
