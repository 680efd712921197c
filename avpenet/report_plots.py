"""The evaluation report's PNG plots (matplotlib, Agg backend: no display needed), one function a figure.

Each figure is drawn in memory and replaced whole (avpenet.durable): a rerun that fails leaves the last one.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet.durable import replace_bytes

_AGE_COLORS = {"neonate": "tab:orange", "adult": "tab:blue", "unknown": "tab:gray"}


def plots(result: dict, img: Path) -> dict[str, str]:
    """Every figure of the report as img/eval_*.png; returns {figure: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    p = result["_predictions"]
    files: dict[str, str] = {}
    for plot in (_pred_vs_true, _bland_altman, _confusion, _per_age, _robustness, _modalities, _training):
        plot(plt, result, p, img, files)
    return files


def _pred_vs_true(plt, result: dict, p: dict, img: Path, files: dict[str, str]) -> None:
    """Predicted against rater-median score, per age group."""
    pred, true, age = np.asarray(p[C.SCORE.name]), np.asarray(p["true"]), np.asarray(p["age"])
    fig, ax = plt.subplots(figsize=(5, 5))
    for a in np.unique(age):
        ax.scatter(true[age == a], pred[age == a], s=10, alpha=0.6, label=a, color=_AGE_COLORS.get(a))
    ax.plot([0, 10], [0, 10], "k--", lw=1)
    for b in C.LEVEL_UPPER_BOUNDS[:-1]:
        ax.axvline(b, color="gray", lw=0.5)
        ax.axhline(b, color="gray", lw=0.5)
    ax.set(xlabel="label (rater median)", ylabel="predicted score", xlim=(0, 10), ylim=(0, 10))
    ax.set_title(
        f"Predicted vs true (MAE {result['fusion']['mae']:.2f}, r {result['fusion']['pearson_r']:.2f})"
    )
    ax.legend()
    files["pred_vs_true"] = _save(fig, img / "eval_pred_vs_true.png")


def _bland_altman(plt, result: dict, p: dict, img: Path, files: dict[str, str]) -> None:
    """Bland-Altman plot; the bias and limits of agreement go into the result for the text."""
    pred, true, age = np.asarray(p[C.SCORE.name]), np.asarray(p["true"]), np.asarray(p["age"])
    mean, diff = (pred + true) / 2, pred - true
    bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(6, 4))
    for a in np.unique(age):
        ax.scatter(mean[age == a], diff[age == a], s=10, alpha=0.6, label=a, color=_AGE_COLORS.get(a))
    for y, style, name in (
        (bias, "-", "bias"),
        (bias + 1.96 * sd, "--", "+1.96 SD"),
        (bias - 1.96 * sd, "--", "-1.96 SD"),
    ):
        ax.axhline(y, color="k", ls=style, lw=1)
        ax.text(10, y, f" {name} {y:+.2f}", va="center", fontsize=8)
    ax.set(xlabel="mean of prediction and label", ylabel="prediction - label", xlim=(0, 10))
    ax.set_title("Bland-Altman with 95% limits of agreement")
    ax.legend(loc="lower left")
    files["bland_altman"] = _save(fig, img / "eval_bland_altman.png")
    result["_bland_altman"] = {"bias": bias, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def _confusion(plt, result: dict, p: dict, img: Path, files: dict[str, str]) -> None:
    """Confusion matrix of the three pain levels; the counts go into the result."""
    pred, true = np.asarray(p[C.SCORE.name]), np.asarray(p["true"])
    from avpenet.predict import level_index

    cm = np.zeros((3, 3), int)
    for t, q in zip(level_index(true), level_index(pred), strict=True):
        cm[t, q] += 1
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="k")
    ax.set(xticks=range(3), yticks=range(3), xticklabels=C.LEVELS, yticklabels=C.LEVELS)
    ax.set(xlabel="predicted level", ylabel="true level", title="Confusion matrix (3 levels)")
    files["confusion"] = _save(fig, img / "eval_confusion.png")
    result["_confusion"] = cm.tolist()


def _per_age(plt, result: dict, p: dict, img: Path, files: dict[str, str]) -> None:
    """MAE per age group beside its label-noise floor."""
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = list(C.LABELLED_AGE_GROUPS)
    x = np.arange(len(groups))
    fus = [result["by_age"][g]["mae"] for g in groups]
    floor = [result["by_age"][g].get("label_noise_floor_mae") or 0.0 for g in groups]
    ax.bar(x - 0.2, fus, 0.4, label="fusion MAE")
    ax.bar(x + 0.2, floor, 0.4, label="label-noise floor (label vs latent)", color="lightgray")
    ax.axhline(0.95, color="r", ls="--", lw=1, label="target 0.95")
    ax.set(xticks=x, xticklabels=groups, ylabel="MAE (0-10)", title="MAE per age group")
    ax.legend()
    files["per_age"] = _save(fig, img / "eval_per_age.png")


def _robustness(plt, result: dict, p: dict, img: Path, files: dict[str, str]) -> None:
    """MAE under added noise, occlusion and a missing modality."""
    rob = result["robustness"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    snrs = [k for k in rob if k.startswith("snr_")]
    xs = ["clean"] + [k[4:].replace("db", " dB") for k in snrs]
    ys = [rob["clean"]["mae"]] + [rob[k]["mae"] for k in snrs]
    a1.plot(xs, ys, "o-")
    a1.axhline(1.2 * rob["clean"]["mae"], color="r", ls="--", lw=1, label="+20% of clean")
    a1.set(xlabel="added hospital noise (SNR)", ylabel="MAE", title="Noise robustness", ylim=(0, None))
    a1.legend()
    names = ["clean", "lower_face_occluded", "audio_missing", "face_missing"]
    a2.bar(
        range(len(names)),
        [rob[n]["mae"] for n in names],
        color=["tab:blue", "tab:purple", "tab:red", "tab:red"],
    )
    a2.axhline(1.2 * rob["clean"]["mae"], color="r", ls="--", lw=1)
    a2.set(xticks=range(len(names)), xticklabels=[n.replace("_", "\n") for n in names], ylabel="MAE")
    a2.set_title("Occlusion and missing modality")
    files["robustness"] = _save(fig, img / "eval_robustness.png")


def _modalities(plt, result: dict, p: dict, img: Path, files: dict[str, str]) -> None:
    """Fusion against each single modality."""
    keys = [
        k
        for k in ("fusion", "audio_only", "visual_only", "audio_only_trained", "visual_only_trained")
        if k in result
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(keys)), [result[k]["mae"] for k in keys], color="tab:blue")
    if result.get("label_noise_floor_mae"):
        ax.axhline(result["label_noise_floor_mae"], color="gray", ls=":", label="label-noise floor")
        ax.legend()
    ax.set(xticks=range(len(keys)), xticklabels=[k.replace("_", "\n") for k in keys], ylabel="MAE")
    ax.set_title("Fusion vs single modality")
    files["modalities"] = _save(fig, img / "eval_modalities.png")


def _training(plt, result: dict, p: dict, img: Path, files: dict[str, str]) -> None:
    """Training and validation curves, when the checkpoint kept its history."""
    hist = result.get("_history") or []
    if hist:
        fig, ax = plt.subplots(figsize=(6, 4))
        ep = [h["epoch"] for h in hist]
        ax.plot(ep, [h["train"]["l1"] for h in hist], "o-", label="train L1 (augmented windows)")
        ax.plot(ep, [h["val_mae"] for h in hist], "o-", label="validation clip MAE")
        ax.set(xlabel="epoch", ylabel="MAE (0-10)", title="Training")
        ax.legend()
        files["training"] = _save(fig, img / "eval_training.png")


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    replace_bytes(path, buf.getvalue())  # the last figure stays until this one is whole on disk
    plt.close(fig)
    return path.name
