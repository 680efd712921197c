"""The last gate before Triton: whatever the decoders let through, non-finite model inputs are a 422, never
tensors sent to the ensemble (a poisoned batch once wedged Triton; docs/RELIABILITY.md)."""

from __future__ import annotations

import numpy as np
import pytest
from support.gateway import wav_bytes

from avpenet import contract
from avpenet.errors import NothingToScore, UndecodableMedia
from avpenet.features import windows
from preprocess_service.extract import extract
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.settings import Limits


def test_non_finite_model_inputs_never_leave_the_extractor(monkeypatch):
    real = windows.model_inputs

    def poisoned(*args, **kwargs):
        inputs = real(*args, **kwargs)
        inputs[contract.AUDIO.name][0, 7] = np.inf
        return inputs

    monkeypatch.setattr(windows, "model_inputs", poisoned)
    request = ScoreRequest(audio=MediaPart(data=wav_bytes(3.0)), age_group="adult")
    with pytest.raises(UndecodableMedia, match="non-finite audio"):
        extract(request, Limits())


def test_finite_inputs_pass():
    request = ScoreRequest(audio=MediaPart(data=wav_bytes(3.0)), age_group="adult")
    assert extract(request, Limits()).n_windows == 1


@pytest.mark.parametrize("seconds", [0.01, 0.1])
def test_audio_no_window_counts_as_sound_and_no_face_is_refused_not_scored_from_nothing(seconds):
    """At most WINDOW_TAIL_TOLERANCE_S of audio is no window's sound (windows.sound_windows): without a face
    the one window holds neither modality. It was scored anyway, from the age prior alone ("moderate", with
    `modalities: ["audio"]`); now it is a 422 that says how long the audio was and what to send."""
    request = ScoreRequest(audio=MediaPart(data=wav_bytes(seconds)), age_group="neonate")
    with pytest.raises(NothingToScore, match=rf"the audio lasts {seconds:.2f} s, too short to score"):
        extract(request, Limits())


def test_audio_just_past_the_tail_is_scored_as_sound():
    request = ScoreRequest(audio=MediaPart(data=wav_bytes(0.11)), age_group="neonate")
    extracted = extract(request, Limits())
    assert extracted.modalities == ["audio"] and extracted.masked.keys() == {"visual"}
