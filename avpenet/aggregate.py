"""A clip's outputs from its windows' outputs, in numpy only: the gateway serves with this, evaluation scores
with it, so their clip scores agree, and the gateway never imports torch."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from avpenet import contract as C

# z of the two-sided normal interval with contract.INTERVAL_COVERAGE (0.90 -> 1.6449)
Z_INTERVAL: float = NormalDist().inv_cdf(0.5 + C.INTERVAL_COVERAGE / 2)


def aggregate_windows(
    score: np.ndarray,
    log_variance: np.ndarray,
    class_probs: np.ndarray,
    modality_weights: np.ndarray,
) -> dict[str, np.ndarray | float]:
    """One clip's outputs from its windows' outputs (arrays with one row per window).

    score, class_probs and modality_weights are averaged over the windows. The spread is the mean of the
    windows' variances (not divided by the window count: overlapping windows of one clip are far from
    independent), and the 90% interval is rebuilt from it (the served log_variance is already calibrated on
    validation clips aggregated exactly this way), clipped to 0-10.

    A window with neither modality (both weights 0: a face lost for 3 s in a clip without sound) scores only
    the model's age prior (about 5.7), not the patient; it is left out while any window of the clip has a
    modality, so it cannot pull a calm patient's clip toward "moderate" (`informed_windows`).
    """
    weights = np.asarray(modality_weights, dtype=np.float64).reshape(-1, *C.MODALITY_WEIGHTS.shape)
    keep = informed_windows(weights)
    score = np.asarray(score, dtype=np.float64).reshape(-1)[keep]
    variance = np.exp(np.asarray(log_variance, dtype=np.float64).reshape(-1))[keep]
    s = float(score.mean())
    var = float(variance.mean())
    half = Z_INTERVAL * math.sqrt(var)
    probs = np.asarray(class_probs, dtype=np.float64).reshape(-1, len(C.LEVELS))[keep]
    return {
        C.SCORE.name: s,
        C.LOG_VARIANCE.name: math.log(var),
        C.INTERVAL.name: np.clip([s - half, s + half], C.SCORE_MIN, C.SCORE_MAX),
        C.CLASS_PROBS.name: probs.mean(axis=0),
        C.MODALITY_WEIGHTS.name: weights[keep].mean(axis=0),
    }


def informed_windows(modality_weights: np.ndarray) -> np.ndarray:
    """Which windows a clip score reads: those with a modality, or all of them when none has one."""
    informed = _with_a_modality(modality_weights)
    return informed if informed.any() else np.ones_like(informed)


def _with_a_modality(modality_weights: np.ndarray) -> np.ndarray:
    """[n] bool: the windows with sound or a face (an absent modality's weight is exactly 0)."""
    return np.asarray(modality_weights).reshape(-1, *C.MODALITY_WEIGHTS.shape).sum(axis=1) > 0


def adult_probability(adult_probability: np.ndarray, modality_weights: np.ndarray) -> float | None:
    """The clip's P(adult) as read by the age head: its mean over the windows the clip score reads, or None
    when the model read no age (contract.NOT_READ: a fusion without a fitted head) or there was nothing to
    read it from (no window has a modality: the head's answer to empty inputs is not a reading)."""
    informed = _with_a_modality(modality_weights)
    p = np.asarray(adult_probability, dtype=np.float64).reshape(-1)[informed]
    return None if not informed.any() or np.any(p == C.NOT_READ) else float(p.mean())
