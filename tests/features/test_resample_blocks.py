"""`audio.resample` feeds soxr block by block: its result is bit for bit the one-shot float64 resampling the
features were always made with (training and serving alike). What it holds: test_decode_memory.py."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from avpenet import contract
from avpenet.errors import UndecodableMedia
from avpenet.features import audio

RATES = (8000, 11025, 22050, 44100, 48000, 96000, 192000)


def _one_shot(wave: np.ndarray, sr: int) -> np.ndarray:
    """What `resample` computed before: the whole wave in float64 through soxr.resample."""
    return soxr.resample(wave.astype(np.float64), sr, contract.SAMPLE_RATE, quality="HQ").astype(np.float32)


def _wave(n: int, sr: int, scale: float = 0.3) -> np.ndarray:
    t = np.arange(n) / sr
    noise = np.random.default_rng(n).standard_normal(n)
    return (scale * (np.sin(2 * np.pi * 440 * t) + 0.3 * noise)).astype(np.float32)


@pytest.mark.parametrize("sr", RATES)
def test_blocks_give_the_one_shot_result_bit_for_bit(sr):
    block = int(audio.RESAMPLE_BLOCK_S * sr)
    for n in (1, 7, int(0.1 * sr), 3 * sr + 1, block - 1, block, block + 1, 2 * block, 5 * block + 13):
        wave = _wave(n, sr)
        got, want = audio.resample(wave, sr), _one_shot(wave, sr)
        assert got.dtype == np.float32 and got.shape == want.shape, (sr, n)
        assert np.array_equal(got, want), (sr, n, float(np.max(np.abs(got - want))))


def test_a_long_and_a_loud_wave_are_unchanged():
    wave = _wave(60 * 48000 + 3, 48000)
    assert np.array_equal(audio.resample(wave, 48000), _one_shot(wave, 48000))
    loud = _wave(3 * 44100, 44100, scale=audio.MAX_SAMPLE_MAGNITUDE / 2)  # float32 holds its overshoot
    assert np.array_equal(audio.resample(loud, 44100), _one_shot(loud, 44100))


def test_the_model_rate_is_passed_through_and_non_finite_output_refused():
    wave = _wave(1000, contract.SAMPLE_RATE)
    assert audio.resample(wave, contract.SAMPLE_RATE) is wave
    with pytest.raises(UndecodableMedia, match="resampled samples contain NaN"):
        audio.resample(np.array([0.0, np.inf, 0.0], np.float32), 48000)
