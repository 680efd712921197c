"""Source–filter non-speech vocalisations: neonatal cries, adult moans and groans, and non-pain confounders.

Why source–filter: the acoustic cues pain research reports live in the source (F0 level and melody,
hyperphonation, jitter/shimmer, roughness, phonation length) and in effort (spectral tilt), while the vocal
tract only colours them (formants). A harmonic source with per-sample F0 and amplitude through a cascade of
formant resonators gives those cues directly and costs a few milliseconds per clip.

Voices are synthesised at contract.SAMPLE_RATE (all cues lie below 8 kHz); the dataset step resamples to
the clip's file rate. Levels: a unit's voiced RMS equals its `level` (linear), with the nominal vocal level
REFERENCE_RMS for a medium-effort unit.

Why one module over 300 lines: the source, the filters and the three kinds of vocalisation share
one source-filter model and its levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from avpenet import contract

SR = contract.SAMPLE_RATE
REFERENCE_RMS = 0.1  # nominal RMS of a medium-effort vocal unit
MAX_HARMONIC_HZ = 7600.0  # harmonics above this are dropped (below Nyquist of SR)

# F0 ranges from the cry/moan literature (Hz). Neonatal cries rise with pain; hyperphonation jumps > 1 kHz.
NEONATE_F0 = (350.0, 420.0)  # resting cry F0 of a subject; pain adds up to PAIN_F0_RISE[neonate]
ADULT_F0 = {"low": (90.0, 130.0), "high": (160.0, 220.0)}
PAIN_F0_RISE = {"neonate": 200.0, "adult": 0.35}  # neonate: + Hz at full arousal; adult: relative rise
HYPERPHONATION_F0 = (1000.0, 1800.0)


@dataclass(frozen=True)
class Voice:
    """A subject's vocal identity: resting F0, vocal-tract formants and voice quality."""

    age_group: str
    f0_hz: float
    formants: tuple[float, ...]
    bandwidths: tuple[float, ...]
    breathiness: float  # aspiration noise relative to the harmonic source
    jitter: float  # baseline cycle-to-cycle F0 perturbation (fraction)
    shimmer: float  # baseline amplitude perturbation (fraction)


def make_voice(age_group: str, rng: np.random.Generator) -> Voice:
    """Draw a subject's voice. Neonate tracts are short (high formants); adults are male- or female-range."""
    if age_group == "neonate":
        f0 = rng.uniform(*NEONATE_F0)
        formants = (rng.uniform(900, 1300), rng.uniform(2400, 3200), rng.uniform(4200, 5200), 6200.0)
    else:
        f0 = rng.uniform(*ADULT_F0["low" if rng.uniform() < 0.5 else "high"])
        formants = (rng.uniform(450, 700), rng.uniform(850, 1300), rng.uniform(2300, 2800), 3400.0)
    bandwidths = tuple(float(f * rng.uniform(0.08, 0.14)) for f in formants)
    return Voice(
        age_group=age_group,
        f0_hz=float(f0),
        formants=tuple(float(f) for f in formants),
        bandwidths=bandwidths,
        breathiness=float(rng.uniform(0.02, 0.12)),
        jitter=float(rng.uniform(0.004, 0.01)),
        shimmer=float(rng.uniform(0.03, 0.07)),
    )


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _slow_noise(m: int, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Random values drawn at rate_hz and linearly interpolated to m samples (unit variance)."""
    k = max(2, int(np.ceil(m / SR * rate_hz)) + 2)
    return np.interp(np.arange(m) / SR * rate_hz, np.arange(k), rng.standard_normal(k))


def _resonators(formants: tuple[float, ...], bandwidths: tuple[float, ...]) -> np.ndarray:
    """Second-order sections of a cascade of unit-peak-gain formant resonators."""
    sos = []
    for f, bw in zip(formants, bandwidths, strict=True):
        if f >= 0.48 * SR:
            continue
        r = np.exp(-np.pi * bw / SR)
        theta = 2 * np.pi * f / SR
        a = [1.0, -2 * r * np.cos(theta), r * r]
        sos.append([1.0 - r, 0.0, 0.0, *a])
    return np.asarray(sos)


def _envelope(m: int, attack_s: float, release_s: float) -> np.ndarray:
    t = np.arange(m) / SR
    dur = m / SR
    return np.clip(np.minimum(t / max(attack_s, 1e-3), (dur - t) / max(release_s, 1e-3)), 0.0, 1.0) ** 1.5


def phonation(
    f0: np.ndarray,
    voice: Voice,
    rng: np.random.Generator,
    *,
    tilt: float,
    jitter: float,
    shimmer: float,
    roughness: float,
    breathiness: float,
    formants: tuple[float, ...] | None = None,
) -> np.ndarray:
    """One voiced unit: harmonic source following the F0 track (Hz per sample) through the formants.

    tilt: harmonic k has amplitude k**-tilt (effortful voices have flatter spectra). roughness: share of
    period-doubling (subharmonics, as in groans and pain cries). Returns unit-RMS samples.
    """
    m = f0.size
    f0 = f0 * (1.0 + jitter * _slow_noise(m, float(np.mean(f0)), rng))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    n_harm = max(1, int(MAX_HARMONIC_HZ / max(float(f0.min()), 50.0)))
    k = np.arange(1, n_harm + 1, dtype=np.float64)[:, None]
    weights = (k**-tilt) * (k * f0[None, :] < MAX_HARMONIC_HZ)
    source = np.einsum("km,km->m", weights, np.sin(k * phase[None, :]))
    if roughness > 0:
        source *= 1.0 + roughness * np.sign(np.sin(phase / 2 + 0.3))
    source *= 1.0 + shimmer * _slow_noise(m, float(np.mean(f0)), rng)
    source /= max(_rms(source), 1e-12)
    aspiration = signal.sosfilt(_HIGHPASS_1K, rng.standard_normal(m))
    source += breathiness * aspiration / max(_rms(aspiration), 1e-12) * 3
    sos = _resonators(formants or voice.formants, voice.bandwidths)
    out = signal.sosfilt(sos, source) if len(sos) else source
    return out / max(_rms(out), 1e-12)


_HIGHPASS_1K = signal.butter(2, 1000, btype="highpass", fs=SR, output="sos")
_BAND_BREATH = signal.butter(2, (250, 2500), btype="bandpass", fs=SR, output="sos")
_BAND_GASP = signal.butter(2, (800, 5000), btype="bandpass", fs=SR, output="sos")


def _noise_burst(m: int, rng: np.random.Generator, sos: np.ndarray, attack_s: float, release_s: float):
    x = signal.sosfilt(sos, rng.standard_normal(m)) * _envelope(m, attack_s, release_s)
    return x / max(_rms(x), 1e-12)


@dataclass
class VocalResult:
    """A clip's patient vocal track at SR with its voiced-sample mask and active vocal level."""

    wave: np.ndarray  # float64 [n]
    voiced: np.ndarray  # bool [n], pain vocalisation (cry/moan/groan) samples
    active_rms: float  # RMS over voiced samples (REFERENCE_RMS-scaled nominal level if none)


def _place(out: np.ndarray, start: int, unit: np.ndarray) -> slice:
    start = min(max(start, 0), out.size)
    seg = slice(start, min(out.size, start + unit.size))
    out[seg] += unit[: seg.stop - seg.start]
    return seg


def cry_unit(voice: Voice, arousal: float, rng: np.random.Generator) -> np.ndarray:
    """A neonatal cry unit: rise–fall melody around a pain-raised F0, hyperphonation at high pain."""
    dur = min(2.2, rng.uniform(0.35, 0.7) + arousal * rng.uniform(0.5, 1.3))
    m = int(dur * SR)
    t = np.linspace(0.0, 1.0, m)
    centre = voice.f0_hz + PAIN_F0_RISE["neonate"] * arousal + rng.normal(0, 20)
    depth = rng.uniform(0.1, 0.3)
    f0 = centre * (1.0 + depth * (np.sin(np.pi * t) - 0.5))
    if rng.uniform() < np.clip((arousal - 0.5) * 1.6, 0.0, 0.8):  # hyperphonation segment
        seg_len = int(rng.uniform(0.1, min(0.45, dur * 0.6)) * SR)
        s0 = int(rng.integers(0, max(1, m - seg_len)))
        ramp = np.clip(np.minimum(np.arange(seg_len), seg_len - np.arange(seg_len)) / (0.02 * SR), 0, 1)
        f0[s0 : s0 + seg_len] += ramp * (rng.uniform(*HYPERPHONATION_F0) - f0[s0 : s0 + seg_len])
    x = phonation(
        f0,
        voice,
        rng,
        tilt=float(np.clip(1.7 - 0.8 * arousal, 0.8, 1.8)),
        jitter=voice.jitter * (1 + 1.5 * arousal),
        shimmer=voice.shimmer * (1 + arousal),
        roughness=float(np.clip(rng.uniform(-0.1, 0.4) * arousal, 0, 0.4)),
        breathiness=voice.breathiness * (1 + arousal),
    )
    return x * _envelope(m, rng.uniform(0.02, 0.08), rng.uniform(0.05, 0.15))


def moan_unit(voice: Voice, arousal: float, rng: np.random.Generator) -> np.ndarray:
    """An adult moan/groan: falling melody, louder, longer, rougher and flatter-spectrum with pain."""
    dur = min(3.0, rng.uniform(0.45, 0.9) + arousal * rng.uniform(0.6, 1.8))
    m = int(dur * SR)
    t = np.linspace(0.0, 1.0, m)
    centre = voice.f0_hz * (1.0 + PAIN_F0_RISE["adult"] * arousal * rng.uniform(0.6, 1.2))
    f0 = centre * (1.0 + rng.uniform(0.04, 0.12) - rng.uniform(0.1, 0.25) * t)
    vowel = (
        voice.formants[0] * rng.uniform(0.85, 1.1),
        voice.formants[1] * rng.uniform(0.8, 1.1),
        *voice.formants[2:],
    )
    x = phonation(
        f0,
        voice,
        rng,
        tilt=float(np.clip(1.9 - 0.9 * arousal, 0.9, 2.0)),
        jitter=voice.jitter * (1 + 2.0 * arousal),
        shimmer=voice.shimmer * (1 + 1.5 * arousal),
        roughness=float(np.clip(rng.uniform(0.0, 0.6) * arousal, 0, 0.5)),
        breathiness=voice.breathiness * (1.5 - 0.5 * arousal),
        formants=vowel,
    )
    return x * _envelope(m, rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.4))


def vocalize(
    voice: Voice,
    arousal: float,
    episodes: list[tuple[float, float]],
    n: int,
    rng: np.random.Generator,
    *,
    vocal_share: float = 1.0,
) -> VocalResult:
    """Pain vocalisations filling the distress episodes (start_s, end_s), plus calm breathing throughout.

    arousal (0 calm ... ~1.2 maximal) drives F0, effort, unit length, roughness, gasps and loudness;
    vocal_share (0..1) is the chance each episode is voiced at all (silent grimaces exist).
    """
    wave = np.zeros(n)
    voiced = np.zeros(n, dtype=bool)
    unit_fn = cry_unit if voice.age_group == "neonate" else moan_unit
    level = REFERENCE_RMS * 10 ** ((-8.0 + 12.0 * min(arousal, 1.2)) / 20)
    for start_s, end_s in episodes:
        if rng.uniform() >= vocal_share:
            continue
        t = start_s
        while t < end_s - 0.2:
            if voice.age_group == "adult" and rng.uniform() < 0.6 * arousal:  # gasp before the groan
                gasp = _noise_burst(int(rng.uniform(0.12, 0.3) * SR), rng, _BAND_GASP, 0.03, 0.05)
                _place(wave, int(t * SR), gasp * level * rng.uniform(0.2, 0.5))
                t += gasp.size / SR + rng.uniform(0.02, 0.1)
            unit = unit_fn(voice, arousal, rng) * level * rng.uniform(0.7, 1.2)
            seg = _place(wave, int(t * SR), unit)
            voiced[seg] = True
            t += unit.size / SR
            pause = rng.uniform(0.1, 0.35) if voice.age_group == "neonate" else rng.uniform(0.3, 1.0)
            if voice.age_group == "neonate" and rng.uniform() < 0.5 * arousal:  # inspiratory whistle/gasp
                insp = _noise_burst(int(pause * SR), rng, _BAND_GASP, 0.02, 0.04)
                _place(wave, int(t * SR), insp * level * rng.uniform(0.1, 0.3))
            t += pause
    active = _rms(wave[voiced]) if voiced.any() else level
    wave += breathing(voice, n, rng) * REFERENCE_RMS * 10 ** (rng.uniform(-34, -24) / 20)
    return VocalResult(wave=wave, voiced=voiced, active_rms=float(active))


def breathing(voice: Voice, n: int, rng: np.random.Generator) -> np.ndarray:
    """Calm breathing noise (neonates ~40-60/min, adults ~12-20/min), unit RMS."""
    rate = rng.uniform(0.7, 1.0) if voice.age_group == "neonate" else rng.uniform(0.2, 0.33)
    t = np.arange(n) / SR
    env = np.maximum(0.0, np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))) ** 2
    x = signal.sosfilt(_BAND_BREATH, rng.standard_normal(n)) * env
    return x / max(_rms(x), 1e-12)


# --- Non-pain confounders ----------------------------------------------------------------------------------
def cough(voice: Voice, n: int, rng: np.random.Generator) -> np.ndarray:
    """1-3 coughs: an explosive broadband burst with a short voiced tail. Unit-level (REFERENCE_RMS) peaks."""
    out = np.zeros(n)
    t = rng.uniform(0, max(0.1, n / SR - 1.2))
    for _ in range(int(rng.integers(1, 4))):
        burst = _noise_burst(int(rng.uniform(0.08, 0.18) * SR), rng, _BAND_BREATH, 0.005, 0.08)
        tail_m = int(rng.uniform(0.08, 0.2) * SR)
        tail = phonation(
            np.full(tail_m, voice.f0_hz * rng.uniform(0.9, 1.3)), voice, rng,
            tilt=1.2, jitter=0.03, shimmer=0.15, roughness=0.4, breathiness=0.5,
        ) * _envelope(tail_m, 0.005, 0.06) * 0.5  # fmt: skip
        unit = np.concatenate([burst * 1.5, tail]) * REFERENCE_RMS * rng.uniform(0.8, 1.6)
        _place(out, int(t * SR), unit)
        t += unit.size / SR + rng.uniform(0.15, 0.5)
    return out


def fussing(voice: Voice, n: int, rng: np.random.Generator) -> np.ndarray:
    """Neonatal fussing (hunger, discomfort): short, soft, low-effort voiced bursts near resting F0."""
    out = np.zeros(n)
    t = rng.uniform(0, 0.8)
    while t < n / SR - 0.3:
        m = int(rng.uniform(0.15, 0.45) * SR)
        f0 = np.full(m, voice.f0_hz * rng.uniform(0.85, 1.1)) * (1 + 0.1 * np.sin(np.linspace(0, np.pi, m)))
        unit = phonation(f0, voice, rng, tilt=1.9, jitter=voice.jitter, shimmer=voice.shimmer,
                         roughness=0.0, breathiness=voice.breathiness * 2)  # fmt: skip
        _place(out, int(t * SR), unit * _envelope(m, 0.04, 0.08) * REFERENCE_RMS * rng.uniform(0.25, 0.6))
        t += m / SR + rng.uniform(0.3, 1.2)
    return out


def babble(n: int, rng: np.random.Generator) -> np.ndarray:
    """Other people talking nearby: speech-like syllable trains with intonation, muffled by distance."""
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 3))):
        speaker = make_voice("adult", rng)
        t = rng.uniform(0, 1.0)
        while t < n / SR - 0.2:
            words = int(rng.integers(2, 7))
            for _ in range(words):
                m = int(rng.uniform(0.12, 0.3) * SR)
                f0 = speaker.f0_hz * (1 + 0.15 * rng.standard_normal()) * np.linspace(1.05, 0.95, m)
                vowel = (rng.uniform(300, 800), rng.uniform(900, 2300), rng.uniform(2400, 3000), 3500.0)
                syl = phonation(f0, speaker, rng, tilt=1.8, jitter=0.005, shimmer=0.05, roughness=0.0,
                                breathiness=0.05, formants=vowel)  # fmt: skip
                _place(out, int(t * SR), syl * _envelope(m, 0.02, 0.05))
                t += m / SR + rng.uniform(0.02, 0.12)
            t += rng.uniform(0.3, 1.0)
    out = signal.sosfilt(_LOWPASS_3K5, out)
    return out / max(_rms(out), 1e-12) * REFERENCE_RMS


_LOWPASS_3K5 = signal.butter(2, 3500, btype="lowpass", fs=SR, output="sos")


def sigh(voice: Voice, n: int, rng: np.random.Generator) -> np.ndarray:
    """An adult sigh or yawn sound: a long breathy low vowel with a falling pitch (not pain)."""
    out = np.zeros(n)
    m = int(rng.uniform(0.8, 1.6) * SR)
    f0 = voice.f0_hz * np.linspace(1.0, 0.8, m)
    unit = phonation(f0, voice, rng, tilt=2.2, jitter=voice.jitter, shimmer=voice.shimmer, roughness=0.0,
                     breathiness=0.6) * _envelope(m, 0.2, 0.4)  # fmt: skip
    _place(out, int(rng.uniform(0, max(0.1, n / SR - m / SR)) * SR), unit * REFERENCE_RMS * 0.6)
    return out
