"""Augmentations shared by training, evaluation and AVPE-Synth: what a face tracker reports when the lower
face is covered or the face is lost, and a sound mixed with noise at a chosen SNR.

Library code with no generator behind it, so training and evaluation import it without the dataset generator.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from avpenet import contract
from avpenet.features.track import FaceTrack


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


# --- what a tracker reports when things get in the way ------------------------------------------------------
LOWER_FACE_BLENDSHAPES = tuple(
    i for i, n in enumerate(contract.BLENDSHAPE_NAMES) if n.startswith(("mouth", "jaw", "cheekPuff"))
)
# Mesh indices: the iris centres (after mediapipe's 468 face-mesh points), the nose tip, the upper lip.
IRIS_RIGHT_CENTRE, IRIS_LEFT_CENTRE = 468, 473
NOSE_TIP, UPPER_LIP_CENTRE = 4, 13


def _lower_face_weights(track: FaceTrack) -> np.ndarray:
    """[478] 0 above the nose tip, rising to 1 at the mouth and below (from the track's median mesh)."""
    present = track.face_present
    pts = np.median(track.landmarks[present][:, :, :2], axis=0) * track.image_size.astype(np.float64)
    right, left = pts[IRIS_RIGHT_CENTRE], pts[IRIS_LEFT_CENTRE]
    iod = max(float(np.linalg.norm(left - right)), 1e-6)
    u = (left - right) / iod
    v = np.array([-u[1], u[0]])
    depth = (pts - (right + left) / 2) @ v / iod
    nose, mouth = depth[NOSE_TIP], depth[UPPER_LIP_CENTRE]
    return np.clip((depth - nose) / max(mouth - nose, 1e-3), 0, 1)


def occlude_lower_face(track: FaceTrack, rng: np.random.Generator) -> FaceTrack:
    """What a tracker reports when a surgical mask, pacifier or hand covers the mouth and jaw.

    mediapipe still returns all 478 points, but below the nose it hallucinates a still, average-looking mouth
    with extra jitter; mouth/jaw blendshapes collapse towards low, nearly constant values; and it loses the
    face on some frames. The upper face (brows, eyes) is untouched. Returns a new track.
    """
    out = replace(
        track,
        landmarks=track.landmarks.copy(),
        blendshapes=track.blendshapes.copy(),
        face_present=track.face_present.copy(),
        head_pose=track.head_pose.copy(),
    )
    present = out.face_present
    if not present.any():
        return out
    weights = _lower_face_weights(track)[None, :, None]
    lm = out.landmarks[present].astype(np.float64)
    # Replace lower-face motion by the clip's median lower face (kept attached to the moving upper face).
    upper = weights[0, :, 0] < 0.05
    shift = (lm[:, upper] - np.median(lm[:, upper], axis=0)).mean(axis=1, keepdims=True)
    still = np.median(lm, axis=0)[None] + shift
    size = track.image_size.astype(np.float64)
    iod = float(
        np.linalg.norm((lm[:, IRIS_LEFT_CENTRE, :2] - lm[:, IRIS_RIGHT_CENTRE, :2]) * size, axis=1).mean()
    )
    noise = rng.normal(0, 0.008 * iod, lm.shape) / np.array([size[0], size[1], size[0]])
    mixed = lm * (1 - weights) + (still + noise) * weights
    out.landmarks[present] = mixed.astype(np.float32)
    lower = list(LOWER_FACE_BLENDSHAPES)
    n_present = int(present.sum())
    level = rng.uniform(0.0, 0.12, len(lower))
    out.blendshapes[np.ix_(present, lower)] = np.clip(
        level + rng.normal(0, 0.02, (n_present, len(lower))), 0, 1
    ).astype(np.float32)
    lost = rng.uniform(size=out.face_present.size) < rng.uniform(0.05, 0.3)
    return drop_frames(out, lost)


def drop_frames(track: FaceTrack, lost: np.ndarray) -> FaceTrack:
    """Frames where the tracker found no face: zeros and face_present False (as features.tracker reports)."""
    out = replace(
        track,
        landmarks=track.landmarks.copy(),
        blendshapes=track.blendshapes.copy(),
        face_present=track.face_present.copy(),
        head_pose=track.head_pose.copy(),
    )
    out.landmarks[lost] = 0.0
    out.blendshapes[lost] = 0.0
    out.head_pose[lost] = 0.0
    out.face_present[lost] = False
    return out


def mix_at_snr(
    signal_: np.ndarray, noise: np.ndarray, snr_db: float, *, reference_rms: float | None = None
) -> np.ndarray:
    """signal + noise scaled so that 20·log10(signal RMS / noise RMS) = snr_db; float32, same length.

    reference_rms replaces the signal's own RMS as the level the SNR refers to (the generator passes the
    active vocalisation level, so pauses do not inflate the noise); a silent signal with no reference gets
    the noise at unit-RMS reference, so the result is never all zeros.
    """
    sig = np.asarray(signal_, dtype=np.float32)
    noi = np.asarray(noise, dtype=np.float32)
    if sig.shape != noi.shape:
        raise ValueError(f"signal and noise must have the same shape; got {sig.shape} and {noi.shape}")
    ref = _rms(sig) if reference_rms is None else float(reference_rms)
    if ref <= 1e-9:
        ref = 1.0
    noise_rms = _rms(noi)
    if noise_rms <= 0:
        return sig.copy()
    gain = ref / noise_rms * 10 ** (-snr_db / 20)
    return (sig + noi * np.float32(gain)).astype(np.float32)
