"""The last gate before Triton: whatever the decoders let through, non-finite model inputs are a 422, never
tensors sent to the ensemble (a poisoned batch once wedged Triton; docs/RELIABILITY.md)."""

from __future__ import annotations

import numpy as np
import pytest
from support.gateway import wav_bytes

from avpenet import contract
from avpenet.errors import UndecodableMedia
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
