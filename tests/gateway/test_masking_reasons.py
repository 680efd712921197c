"""The answer's `masked` reasons (preprocess_service.masking), on the shared feature code's real inputs."""

from __future__ import annotations

import numpy as np
from support.gateway import face_track

from avpenet import contract as C
from avpenet.features import audio, windows
from avpenet.features.track import FaceTrack
from preprocess_service import masking

SR = C.SAMPLE_RATE


def _cry(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 450 * t) + 0.01 * np.random.default_rng(0).normal(size=t.size)).astype(
        np.float32
    )


def _apply(wave, track):
    inputs = windows.model_inputs(wave, track, "adult", served=True)
    used, masked = masking.apply(inputs, wave, track)
    return inputs, used, masked


def test_both_used():
    _, used, masked = _apply(_cry(), face_track(3.0))
    assert used == ["audio", "visual"] and masked == {}


def test_silent_audio_with_a_face_is_masked_and_zeroed():
    dither = np.random.default_rng(1).normal(0, 10 ** (-96 / 20), 3 * SR).astype(np.float32)  # 16-bit LSBs
    for wave in (np.zeros(3 * SR, np.float32), dither):
        inputs, used, masked = _apply(wave, face_track(3.0))
        assert used == ["visual"] and masked == {"audio": masking.SILENT}
        assert not inputs[C.AUDIO_PRESENT.name].any()
        assert not windows.model_inputs_of(inputs)[C.WAVEFORM.name].any()  # the windows the model reads


def test_silence_is_masked_window_by_window_and_named_only_when_every_window_was():
    """6 s: a cry for 3 s, then digital silence; a face throughout. Windows 0-2 hold some of the cry,
    window 3 (3-6 s) only silence: it alone is scored from the face, and the clip answer used the audio."""
    wave = np.concatenate([_cry(3.0), np.zeros(3 * SR, np.float32)])
    inputs, used, masked = _apply(wave, face_track(6.0))
    assert inputs[C.AUDIO_PRESENT.name][:, 0].tolist() == [1, 1, 1, 0]
    assert used == ["audio", "visual"] and masked == {}
    model = windows.model_inputs_of(inputs)[C.WAVEFORM.name]
    assert model[:3].any(axis=1).all() and not model[3].any()


def test_a_silent_window_without_a_face_keeps_its_audio():
    track = face_track(6.0)
    track.face_present[30:] = False  # the face leaves after 3 s
    inputs, used, _ = _apply(np.zeros(6 * SR, np.float32), track)
    assert inputs[C.AUDIO_PRESENT.name][:, 0].tolist() == [0, 0, 0, 1]  # windows 0-2 hold a face
    assert used == ["audio", "visual"]


def test_the_silence_threshold_is_the_windows_own_level():
    """Below AUDIO_NO_SIGNAL_DBFS (-80) a window holds no recording; a quiet room (-62, -70 dBFS: the test
    render's quietest windows are -63) is audio the model learned from."""
    rng = np.random.default_rng(2)
    for level_db, masked in ((-82, True), (-78, False), (-70, False), (-62, False)):
        wave = rng.normal(0, 10 ** (level_db / 20), 3 * SR).astype(np.float32)
        face, no_face = np.ones((1, C.FRAMES_PER_WINDOW)), np.zeros((1, C.FRAMES_PER_WINDOW))
        levels = audio.window_levels(wave, 1)
        assert windows.silent_windows(levels, np.ones(1), face).tolist() == [masked]
        assert not windows.silent_windows(levels, np.ones(1), no_face).any()


def test_silence_alone_is_still_scored_from_the_audio():
    inputs, used, masked = _apply(np.zeros(3 * SR, np.float32), None)
    assert used == ["audio"] and masked == {"visual": masking.NOT_SENT_VISUAL}
    assert inputs[C.AUDIO_PRESENT.name].all()


def test_quiet_but_not_silent_audio_is_used():
    _, used, _ = _apply(_cry() * 10 ** (-35 / 20), face_track(3.0))  # about -48 dBFS RMS
    assert "audio" in used


def test_no_face_and_unusable_face_are_told_apart():
    _, used, masked = _apply(_cry(), FaceTrack.empty(30, (160, 160)))
    assert used == ["audio"] and masked == {"visual": masking.NO_FACE}
    track = face_track(3.0)
    track.landmarks[:] = track.landmarks[:, :1]  # every point collapsed onto one: a face "found", unusable
    _, used, masked = _apply(_cry(), track)
    assert masked == {"visual": masking.UNUSABLE_FACE}


def test_audio_not_sent():
    _, used, masked = _apply(None, face_track(3.0))
    assert used == ["visual"] and masked == {"audio": masking.NOT_SENT_AUDIO}


def test_audio_too_short_for_any_window_is_named_beside_a_face():
    """0.05 s of a cry and a 3-s face: no window counts the sound (windows.sound_windows), so the clip is
    scored from the face alone; the answer said it used the audio."""
    inputs, used, masked = _apply(_cry(0.05), face_track(3.0))
    assert not inputs[C.AUDIO_PRESENT.name].any()
    assert used == ["visual"] and masked == {"audio": masking.TOO_SHORT}
