"""One signal, every accepted sample rate and sample format, through the real gateway: one score.

The decoder resamples everything to contract.SAMPLE_RATE and the window normaliser removes level, so the rate,
bit depth and channel count a bedside recorder happens to use must not move the score. Each file stays under
the session stack's 4 MiB upload limit (4 s of a 600 Hz tone). 8-bit PCM is left out: its quantisation
noise (-50 dBFS) is a different signal, and the model hears it (measured: 1.99 vs 2.94).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from support.gateway import API_KEY, audio_score

from avpenet import contract
from preprocess_service.client import score_grpc
from preprocess_service.protocol import MediaPart, ScoreRequest

pytestmark = pytest.mark.integration

SECONDS = 4.0
TOLERANCE = 0.05
# (rate, libsndfile subtype, channels): the accepted range's ends, common recorder rates, every PCM width.
FORMATS = [
    (contract.SAMPLE_RATE, "PCM_16", 1),  # the reference: already at the model's rate
    (contract.AUDIO_MIN_INPUT_RATE, "PCM_16", 1),
    (11025, "PCM_16", 1),
    (22050, "PCM_16", 2),
    (44100, "PCM_24", 1),
    (48000, "PCM_16", 6),
    (48000, "FLOAT", 2),
    (88200, "PCM_32", 1),
    (96000, "PCM_24", 2),
    (contract.AUDIO_MAX_INPUT_RATE, "PCM_24", 1),
    (contract.AUDIO_MAX_INPUT_RATE, "FLOAT", 1),
    (96000, "DOUBLE", 1),
]


def tone_wav(rate: int, subtype: str, channels: int) -> bytes:
    t = np.arange(int(SECONDS * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * 600.0 * t)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(x[:, None], channels, axis=1), rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def test_every_accepted_rate_and_format_scores_the_same(gateway_stack):
    scores = {}
    for rate, subtype, channels in FORMATS:
        wav = tone_wav(rate, subtype, channels)
        assert len(wav) < 4_000_000  # the session stack takes 4 MiB per request
        scores[rate, subtype, channels, "http"] = audio_score(gateway_stack, wav)
        request = ScoreRequest(audio=MediaPart(data=wav, filename="tone.wav"), age_group="adult")
        scores[rate, subtype, channels, "grpc"] = score_grpc(
            gateway_stack.grpc_target, request, api_key=API_KEY
        ).score
    reference = scores[contract.SAMPLE_RATE, "PCM_16", 1, "http"]
    off = {k: round(v, 3) for k, v in scores.items() if abs(v - reference) > TOLERANCE}
    assert not off, f"reference {reference:.3f}; differing: {off}"
