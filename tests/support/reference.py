"""What the tests check the project's own code against: librosa's log-mel, the reference the frontend's DFT,
filter bank and floor must match (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import numpy as np

from avpenet import contract


def librosa_log_mel(window: np.ndarray) -> np.ndarray:
    """[1, N_MELS, MEL_FRAMES] natural-log mel power of one 3 s window, computed by librosa in float64."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=window.astype(np.float64), sr=contract.SAMPLE_RATE, n_fft=contract.N_FFT,
        hop_length=contract.HOP_LENGTH, window="hann", center=True, pad_mode="constant", power=2.0,
        n_mels=contract.N_MELS, fmin=contract.F_MIN, fmax=contract.F_MAX, htk=False, norm="slaney",
    )  # fmt: skip
    return np.log(np.maximum(mel, contract.LOG_MEL_FLOOR))[None, :, : contract.MEL_FRAMES]
