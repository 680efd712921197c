"""Hospital background sound: HVAC/ventilator hiss, monitor alarms and heartbeat beeps, handling transients.

Used twice: the generator mixes it under every clip at a drawn SNR, and training/evaluation reuse it for
noise augmentation and the SNR 20/10/5/0 dB robustness curve, so both see the same acoustic world.
Everything is vectorised numpy/scipy.signal; a 6 s clip at 48 kHz costs a few milliseconds.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from avpenet import contract

# IEC 60601-1-8 style alarm melodies use a 150-1000 Hz fundamental with >= 4 harmonics; bedside monitors also
# beep once per heartbeat (SpO2 pulse tone, pitch following saturation).
ALARM_F0_HZ = (150.0, 1000.0)
PULSE_TONE_HZ = (600.0, 1100.0)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec /= f ** (exponent / 2)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / max(_rms(x), 1e-12)


def _hvac(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Air handling: pink-brown rumble, a mains/fan hum line, and a slow level drift."""
    x = _colored_noise(n, rng, rng.uniform(1.0, 1.8))
    t = np.arange(n) / sr
    hum_f = rng.choice([50.0, 60.0]) * rng.integers(1, 4)
    hum = np.sin(2 * np.pi * hum_f * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.0, 0.4)
    drift = 1.0 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
    return (x + hum) * drift


def _ventilator(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Mechanical ventilation: band-limited whoosh per inspiration (12-40 breaths/min), valve clicks."""
    rate = rng.uniform(0.2, 0.67)  # breaths per second
    t = np.arange(n) / sr
    phase = (t * rate + rng.uniform()) % 1.0
    insp = rng.uniform(0.3, 0.45)  # inspiratory fraction of the cycle
    env = np.where(phase < insp, np.sin(np.pi * phase / insp) ** 2, 0.0)
    lo, hi = rng.uniform(200, 500), rng.uniform(1500, min(4000, 0.45 * sr))
    sos = signal.butter(2, (lo, hi), btype="bandpass", fs=sr, output="sos")
    whoosh = signal.sosfilt(sos, rng.standard_normal(n)) * env
    clicks = np.zeros(n)
    starts = np.flatnonzero(np.diff((phase < 0.01).astype(np.int8)) == 1)
    click = np.exp(-np.arange(int(0.01 * sr)) / (0.002 * sr)) * rng.standard_normal(int(0.01 * sr))
    for s in starts:
        seg = clicks[s : s + click.size]
        seg += click[: seg.size] * 3.0
    return whoosh / max(_rms(whoosh), 1e-12) + clicks


def _tone_pulses(n: int, sr: int, f0: float, onsets: np.ndarray, dur: float, harmonics: int) -> np.ndarray:
    """Harmonic tone bursts with 10 ms ramps at the given onset times (s)."""
    out = np.zeros(n)
    m = int(dur * sr)
    if m <= 0:
        return out
    t = np.arange(m) / sr
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1) if f0 * k < 0.45 * sr)
    ramp = np.minimum(1.0, np.minimum(t, dur - t) / 0.01)
    burst = tone * ramp
    for onset in onsets:
        s = int(onset * sr)
        if s >= n:
            continue
        seg = out[s : s + m]
        seg += burst[: seg.size]
    return out


def _alarm(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A priority alarm melody (3 or 5 pulses, repeating) or a pulse-oximeter beep per heartbeat."""
    duration = n / sr
    if rng.uniform() < 0.5:
        f0 = rng.uniform(*PULSE_TONE_HZ)
        period = 60.0 / rng.uniform(70, 160)
        onsets = np.arange(rng.uniform(0, period), duration, period)
        return _tone_pulses(n, sr, f0, onsets, rng.uniform(0.05, 0.12), 2)
    f0 = rng.uniform(*ALARM_F0_HZ)
    pulses = int(rng.choice([3, 5]))
    gap = rng.uniform(0.12, 0.25)
    burst = np.arange(pulses) * gap
    repeat = rng.uniform(1.5, 4.0)
    onsets = (burst[None, :] + np.arange(rng.uniform(-repeat, 0), duration, repeat)[:, None]).ravel()
    return _tone_pulses(n, sr, f0, onsets[onsets >= 0], gap * 0.6, 5)


def _transients(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Clatter, door and trolley knocks: broadband bursts with exponential decay at random times."""
    out = np.zeros(n)
    for _ in range(rng.poisson(1.2 * n / sr / 3)):
        m = int(rng.uniform(0.03, 0.3) * sr)
        decay = np.exp(-np.arange(m) / (rng.uniform(0.01, 0.08) * sr))
        sos = signal.butter(2, rng.uniform(300, min(6000, 0.4 * sr)), btype="lowpass", fs=sr, output="sos")
        burst = signal.sosfilt(sos, rng.standard_normal(m)) * decay * rng.uniform(2, 8)
        s = int(rng.integers(0, n))
        seg = out[s : s + m]
        seg += burst[: seg.size]
    return out


def hospital_noise(
    n_samples: int, rng: np.random.Generator, sample_rate: int = contract.SAMPLE_RATE
) -> np.ndarray:
    """A mono hospital background of n_samples at sample_rate, float32 with unit RMS.

    Always HVAC; a ventilator, an alarm and handling transients each with their own chance, at random
    relative levels. Scale it with avpenet.augment.mix_at_snr.
    """
    if n_samples <= 0:
        return np.zeros(max(n_samples, 0), np.float32)
    sr = int(sample_rate)
    mix = _hvac(n_samples, rng, sr)
    mix /= max(_rms(mix), 1e-12)
    for source, chance, level_db in (
        (_ventilator, 0.5, (-12.0, 0.0)),
        (_alarm, 0.45, (-15.0, 3.0)),
        (_transients, 0.5, (-10.0, 4.0)),
    ):
        if rng.uniform() < chance:
            part = source(n_samples, rng, sr)
            rms = _rms(part)
            if rms > 0:
                mix += part / rms * 10 ** (rng.uniform(*level_db) / 20)
    return (mix / max(_rms(mix), 1e-12)).astype(np.float32)
