"""The answer's `masked` reasons (preprocess_service.masking), on the shared feature code's real inputs."""

from __future__ import annotations

import numpy as np
from support.gateway import face_track

from avpenet import contract as C
from avpenet.features import windows
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
    inputs, used, masked = _apply(np.zeros(3 * SR, np.float32), face_track(3.0))
    assert used == ["visual"] and masked == {"audio": masking.SILENT}
    assert not inputs[C.AUDIO_PRESENT.name].any() and not inputs[C.AUDIO.name].any()


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
