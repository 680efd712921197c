"""Per-window ensemble inputs: the one function training, evaluation, the gateway and the tests call.

Audio and video share one 1 s grid: window i covers audio samples [i*HOP_SAMPLES, +WINDOW_SAMPLES) and
video frames [i*FRAMES_PER_HOP, +FRAMES_PER_WINDOW). N = the larger window count of the modalities present;
the shorter one is zero-padded (audio_present 0 for windows holding no audio sample, frame_mask 0 for
frames past the end or without a usable face). Every clip is decoded and tracked once; overlapping windows
share the frames.

Digital silence: a window whose own samples are below contract.AUDIO_NO_SIGNAL_DBFS RMS (-80: a muted or dead
input, zero padding) while the window has a usable face frame is scored from the face alone — its audio is
masked (audio_present 0, its sound zeroed) as training's modality dropout masks it. Such a window holds no
recording, and the model never heard one in training (its clips always carry room noise, the quietest about
-67 dBFS). A quiet room above the threshold stays audio (the model learned from it: the absence of a cry is
information), and so does a silent window without a face (a window is never left with nothing). The rule
reads only the window's own samples and frames, so a clip scored whole, the same media streamed window by
window, training and evaluation all mask the same windows (`silent_windows`).
"""

from __future__ import annotations

import numpy as np

from avpenet import contract
from avpenet.errors import NothingToScore
from avpenet.features import audio
from avpenet.features.track import FaceTrack


def frame_window_count(n_frames: int) -> int:
    """Windows of FRAMES_PER_WINDOW with FRAMES_PER_HOP hop covering n_frames (the last padded)."""
    return audio._count(n_frames, contract.FRAMES_PER_WINDOW, contract.FRAMES_PER_HOP, contract.FPS)


def window_starts_s(n: int) -> np.ndarray:
    """Start time (s) of each of n windows: the timeline the gateway reports."""
    return np.arange(n, dtype=np.float64) * contract.HOP_SECONDS


def _age(age_group: str | int) -> int:
    if isinstance(age_group, int | np.integer):
        if not 0 <= int(age_group) < len(contract.AGE_GROUPS):
            raise ValueError(f"age_group index must be in [0, {len(contract.AGE_GROUPS)}); got {age_group}")
        return int(age_group)
    return contract.age_index(age_group)


def inputs_from_features(
    wave: np.ndarray | None,
    feats: np.ndarray | None,
    mask: np.ndarray | None,
    age_group: str | int,
    *,
    require_signal: bool = False,
    served: bool = False,
) -> dict[str, np.ndarray]:
    """Batched model inputs {contract tensor name: array with a leading window axis N}.

    wave: 16 kHz mono float32 [S] or None (no audio track); feats [T, VISUAL_FEATURE_DIM] and mask [T] from
    visual.frame_features, or None (no video). With require_signal=True a clip with neither audio samples nor
    a single usable face frame raises NothingToScore (the gateway's 422); training leaves it False.
    The sound is the PyTorch model's WAVEFORM windows, or with served=True the ensemble's AUDIO rows and
    WINDOW_GAIN (contract.ENSEMBLE.inputs; `model_inputs_of` turns them back into the same windows).
    """
    age = _age(age_group)
    n_samples = 0 if wave is None else int(np.asarray(wave).size)
    if (feats is None) != (mask is None):
        raise ValueError("feats and mask must both be given or both be None")
    n_frames = 0
    if feats is not None:
        feats = np.asarray(feats, np.float32)
        mask = np.asarray(mask, np.float32).reshape(-1)
        if feats.ndim != 2 or feats.shape[1] != contract.VISUAL_FEATURE_DIM or feats.shape[0] != mask.size:
            raise ValueError(
                f"feats must be [T, {contract.VISUAL_FEATURE_DIM}] with mask [T]; "
                f"got {feats.shape} and {mask.shape}"
            )
        n_frames = feats.shape[0]
    if require_signal and n_samples == 0 and (mask is None or not mask.any()):
        raise NothingToScore(
            "the clip has no audio and no usable face in any frame; send audio or a visible face"
        )
    n = max(audio.window_count(n_samples), frame_window_count(n_frames))

    levels = audio.window_levels(wave if n_samples else None, n)  # for the gains and the silence rule
    rows, gains = audio.clip_rows(wave if n_samples else None, n, levels)
    if served:
        sound = {contract.AUDIO.name: rows, contract.WINDOW_GAIN.name: gains}
    else:  # what audio.windows gives
        sound = {contract.WAVEFORM.name: audio.windows_from_rows(rows, gains)}
    present = sound_windows(n_samples, n).astype(np.float32)
    visual = np.zeros((n, contract.FRAMES_PER_WINDOW, contract.VISUAL_FEATURE_DIM), np.float32)
    frame_mask = np.zeros((n, contract.FRAMES_PER_WINDOW), np.float32)
    if feats is not None:
        for i in range(n):
            start = i * contract.FRAMES_PER_HOP
            piece = slice(start, min(start + contract.FRAMES_PER_WINDOW, n_frames))
            k = max(0, piece.stop - piece.start)
            visual[i, :k] = feats[piece]
            frame_mask[i, :k] = mask[piece]
    hushed = silent_windows(levels, present, frame_mask)
    if hushed.any():  # masked as training's modality dropout masks audio (module doc)
        present[hushed] = 0.0
        sound[contract.WINDOW_GAIN.name if served else contract.WAVEFORM.name][hushed] = 0.0
    return {
        **sound,
        contract.VISUAL_FEATURES.name: visual,
        contract.FRAME_MASK.name: frame_mask,
        contract.AUDIO_PRESENT.name: present[:, None],
        contract.AGE_GROUP.name: np.full((n, 1), age, np.int64),
    }


def sound_windows(n_samples: int, n: int) -> np.ndarray:
    """[n] bool: which of n windows hold the audio's sound. A window holds sound only if more than the tail a
    window count ignores (WINDOW_TAIL_TOLERANCE_S) falls in it: 0.02 s of audio and 2.98 s of padding,
    gain-normalised as a whole window, is not sound."""
    heard = n_samples - round(contract.WINDOW_TAIL_TOLERANCE_S * contract.SAMPLE_RATE)
    return np.array([i * contract.HOP_SAMPLES < heard for i in range(n)], bool)


def silent_windows(levels: np.ndarray, present: np.ndarray, frame_mask: np.ndarray) -> np.ndarray:
    """[N] bool: windows whose audio is masked as silent (module doc): it holds sound (`present`) below
    contract.AUDIO_NO_SIGNAL_DBFS RMS over the window's own samples (`levels`: `audio.window_levels`, the
    levels its gain was read from, not measured again), and the window a usable face frame."""
    heard = (np.asarray(present).reshape(-1) > 0.5) & np.any(frame_mask > 0.5, axis=1)
    return heard & (np.asarray(levels, np.float64).reshape(-1) < contract.AUDIO_NO_SIGNAL_DBFS)


def model_inputs(
    wave: np.ndarray | None,
    track: FaceTrack | None,
    age_group: str | int,
    *,
    require_signal: bool = False,
    served: bool = False,
) -> dict[str, np.ndarray]:
    """frame_features(track) + inputs_from_features: decoded audio and face track → model inputs."""
    from avpenet.features.visual import frame_features

    feats, mask = frame_features(track) if track is not None else (None, None)
    return inputs_from_features(wave, feats, mask, age_group, require_signal=require_signal, served=served)


def model_inputs_of(ensemble_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch model's inputs (contract.MODEL_INPUTS) for an ensemble request (AUDIO rows -> windows)."""
    if contract.WAVEFORM.name in ensemble_inputs:
        return dict(ensemble_inputs)
    out = {
        k: v for k, v in ensemble_inputs.items() if k not in (contract.AUDIO.name, contract.WINDOW_GAIN.name)
    }
    out[contract.WAVEFORM.name] = audio.windows_from_rows(
        ensemble_inputs[contract.AUDIO.name], ensemble_inputs[contract.WINDOW_GAIN.name]
    )
    return out


def split_rows(ensemble_inputs: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Windows [start, stop) of an ensemble request as a request of their own (AUDIO re-laid for them):
    how a clip longer than contract.MAX_BATCH_SIZE windows is sent in several calls."""
    out = {k: v[start:stop] for k, v in ensemble_inputs.items() if k != contract.AUDIO.name}
    flat = ensemble_inputs[contract.AUDIO.name].reshape(-1)
    n = stop - start
    rows = np.zeros(contract.batch_shape(contract.AUDIO, n), np.float32)
    piece = flat[start * contract.HOP_SAMPLES : (stop - 1) * contract.HOP_SAMPLES + contract.WINDOW_SAMPLES]
    rows.reshape(-1)[: piece.size] = piece
    out[contract.AUDIO.name] = rows
    return out
