"""Batched inference over clips and the clip-level metrics shared by training (validation) and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from avpenet import contract as C
from avpenet.aggregate import aggregate_windows
from avpenet.model import AVPENet

INPUT_NAMES = tuple(t.name for t in C.MODEL_INPUTS)  # the PyTorch model's windows, not the ensemble's rows


def with_age(inputs: dict[str, np.ndarray], age_index: int) -> dict[str, np.ndarray]:
    """A clip's windows sent with another age group (the rest shared, not copied)."""
    return {**inputs, C.AGE_GROUP.name: np.full_like(inputs[C.AGE_GROUP.name], age_index)}


def concat_inputs(inputs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([x[name] for x in inputs]) for name in INPUT_NAMES}


@torch.no_grad()
def predict_windows(
    model: AVPENet, inputs: dict[str, np.ndarray], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Every ensemble output for every window (rows of ``inputs``), in eval mode, batched."""
    model.eval()
    n = len(inputs[C.AGE_GROUP.name])
    outs: dict[str, list[np.ndarray]] = {t.name: [] for t in C.ENSEMBLE.outputs}
    for lo in range(0, n, batch_size):
        batch = [torch.from_numpy(np.ascontiguousarray(inputs[k][lo : lo + batch_size])) for k in INPUT_NAMES]
        for name, value in model(*batch).items():
            outs[name].append(value.numpy())
    return {
        k: np.concatenate(v) if v else np.zeros((0, *C.ENSEMBLE.outputs[0].shape)) for k, v in outs.items()
    }


def predict_clips(model: AVPENet, clip_inputs: Sequence[dict[str, np.ndarray]], batch_size: int = 64) -> dict:
    """Clip-level predictions (``aggregate_windows`` of each clip's windows), as arrays over clips."""
    if not clip_inputs:
        return {
            C.SCORE.name: np.zeros(0),
            C.INTERVAL.name: np.zeros((0, 2)),
            C.CLASS_PROBS.name: np.zeros((0, len(C.LEVELS))),
        }
    out = predict_windows(model, concat_inputs(clip_inputs), batch_size)
    bounds = np.cumsum([0] + [len(x[C.AGE_GROUP.name]) for x in clip_inputs])
    clips = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        clips.append(
            aggregate_windows(
                out[C.SCORE.name][lo:hi],
                out[C.LOG_VARIANCE.name][lo:hi],
                out[C.CLASS_PROBS.name][lo:hi],
                out[C.MODALITY_WEIGHTS.name][lo:hi],
            )
        )
    keys = clips[0].keys()
    return {k: np.array([c[k] for c in clips]) for k in keys}


def level_index(scores: np.ndarray) -> np.ndarray:
    """contract.LEVELS index of each score (low [0,3], moderate (3,6], high (6,10]); -1 for NaN, which matches
    no level (searchsorted put it in "high", so a broken prediction counted as right for high-pain clips)."""
    scores = np.asarray(scores, float)
    levels = np.searchsorted(np.asarray(C.LEVEL_UPPER_BOUNDS[:-1]), scores, side="left")
    return np.where(np.isnan(scores), -1, levels)


def icc_a1(pred: np.ndarray, true: np.ndarray) -> float:
    """ICC(A,1): two-way, absolute agreement, single measure (McGraw & Wong) between two 'raters'."""
    x = np.stack([np.asarray(pred, float), np.asarray(true, float)], axis=1)  # (n, k=2)
    n, k = x.shape
    if n < 2:
        return float("nan")
    grand = x.mean()
    msr = k * np.sum((x.mean(axis=1) - grand) ** 2) / (n - 1)  # between targets
    msc = n * np.sum((x.mean(axis=0) - grand) ** 2) / (k - 1)  # between raters (bias)
    sse = np.sum((x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand) ** 2)
    mse = sse / ((n - 1) * (k - 1))
    denom = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / denom) if denom > 0 else float("nan")


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """mae, rmse, pearson_r, icc, accuracy_3class, macro_f1 (levels from the scores) and n."""
    from sklearn.metrics import f1_score

    pred, true = np.asarray(pred, float), np.asarray(true, float)
    n = len(true)
    if n == 0:
        return {
            k: float("nan") for k in ("mae", "rmse", "pearson_r", "icc", "accuracy_3class", "macro_f1")
        } | {"n": 0}
    err = pred - true
    r = float(np.corrcoef(pred, true)[0, 1]) if n > 1 and pred.std() > 0 and true.std() > 0 else float("nan")
    lp, lt = level_index(pred), level_index(true)
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "pearson_r": r,
        "icc": icc_a1(pred, true),
        "accuracy_3class": float((lp == lt).mean()),
        # over the levels in the labels or the predictions (sklearn's default): a level neither holds is no
        # F1 of 0 (a perfect prediction of one low clip scored 0.33)
        "macro_f1": float(f1_score(lt, lp, average="macro", zero_division=0)),
        "n": n,
    }
