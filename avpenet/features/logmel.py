"""Reference log-mel spectrogram (numpy, float64) and the constant matrices it is built from.

The served log-mel runs inside Triton as part of the model (the `audio_frontend` step); this module is the
ground truth it is tested against, and itself is tested against librosa. Definition, all constants from
contract: periodic Hann window of N_FFT, centred frames (N_FFT // 2 zeros on each side, i.e. librosa's
center=True, pad_mode='constant'), hop HOP_LENGTH, power spectrum |X|^2, Slaney-style mel filterbank
(Slaney mel scale, area-normalised triangles) of N_MELS bands over [F_MIN, F_MAX], natural log of
max(mel, LOG_MEL_FLOOR), and the first MEL_FRAMES of the 1 + WINDOW_SAMPLES // HOP_LENGTH frames.

Reuse `hann_window()`, `dft_basis()` and `mel_filterbank()` to build a fixed-weight frontend (conv/matmul)
in torch or ONNX so it matches this reference by construction.
"""

from __future__ import annotations

import numpy as np

from avpenet import contract

N_BINS = contract.N_FFT // 2 + 1  # 201 one-sided frequency bins


def hann_window(n: int = contract.N_FFT) -> np.ndarray:
    """Periodic Hann window (the DFT-even one scipy/librosa/torch use for spectra), float64 [n]."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def dft_basis(windowed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary one-sided DFT matrices [N_BINS, N_FFT] (float64), optionally times the window.

    For a frame x [N_FFT]: re = basis_re @ x, im = basis_im @ x, power = re**2 + im**2 (the sign of the
    imaginary part follows numpy's rfft).
    """
    n = np.arange(contract.N_FFT)
    k = np.arange(N_BINS)[:, None]
    angle = 2.0 * np.pi * k * n / contract.N_FFT
    re, im = np.cos(angle), -np.sin(angle)
    if windowed:
        w = hann_window()
        re, im = re * w, im * w
    return re, im


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log_part, f / f_sp)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank() -> np.ndarray:
    """Slaney mel filterbank [N_MELS, N_BINS] float64: triangles equally spaced in mel, each of unit area."""
    fft_freqs = np.linspace(0.0, contract.SAMPLE_RATE / 2.0, N_BINS)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(contract.F_MIN), hz_to_mel(contract.F_MAX), contract.N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:] - mel_f[:-2])
    return weights * enorm[:, None]


def frames(window: np.ndarray) -> np.ndarray:
    """Centred, zero-padded analysis frames [..., MEL_FRAMES, N_FFT] of waveform(s) [..., S]."""
    x = np.asarray(window, np.float64)
    pad = contract.N_FFT // 2
    x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
    n_frames = 1 + (x.shape[-1] - contract.N_FFT) // contract.HOP_LENGTH
    idx = np.arange(n_frames)[:, None] * contract.HOP_LENGTH + np.arange(contract.N_FFT)[None, :]
    return x[..., idx][..., : contract.MEL_FRAMES, :]


def reference_log_mel(window: np.ndarray) -> np.ndarray:
    """Log-mel of a window [WINDOW_SAMPLES] → [1, N_MELS, MEL_FRAMES] float32; [N, S] → [N, 1, ...]."""
    x = np.asarray(window)
    if x.shape[-1] != contract.WINDOW_SAMPLES:
        raise ValueError(f"expected windows of {contract.WINDOW_SAMPLES} samples; got shape {x.shape}")
    spec = np.fft.rfft(frames(x) * hann_window(), axis=-1)  # [..., T, N_BINS]
    power = spec.real**2 + spec.imag**2
    mel = power @ mel_filterbank().T  # [..., T, N_MELS]
    log_mel = np.log(np.maximum(mel, contract.LOG_MEL_FLOOR))
    return np.swapaxes(log_mel, -1, -2)[..., None, :, :].astype(np.float32)
