"""Markdown evaluation report with PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avpenet import contract as C

METRIC_KEYS = ("mae", "rmse", "pearson_r", "icc", "accuracy_3class", "macro_f1")


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, int):
        return str(v)
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


_AGE_COLORS = {"neonate": "tab:orange", "adult": "tab:blue", "unknown": "tab:gray"}


def _plots(result: dict, img: Path) -> dict[str, str]:
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _metrics_table(rows: list[tuple[str, dict]]) -> list[str]:
    head = "| | MAE | RMSE | Pearson r | ICC(A,1) | 3-class acc | macro-F1 | clips | label noise MAE |"
    out = [head, "|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        cells = [_fmt(m.get(k), pct=k == "accuracy_3class") for k in METRIC_KEYS]
        out.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {m.get('n', '—')} | {_fmt(m.get('label_noise_floor_mae'))} |"
        )
    return out


def _fitted_on(interval: dict) -> str:
    """Where the interval's scale s came from: the training run's validation clips, or `avpenet calibrate`."""
    scale = f"= {interval['scale']:.3f} " if interval.get("scale") is not None else ""
    calib = interval.get("calibration")
    if not calib:
        return f"{scale}fitted on the validation subjects' clips"
    pooled = "".join(
        f" and {a['clips']} clips of {a['subjects']} fresh subjects (a set of another seed)"
        for a in calib.get("added", [])
    )
    return (
        f"{scale}fitted by `avpenet calibrate` on {calib['val_clips']} clips of "
        f"{len(calib['val_subjects'])} validation subjects{pooled}"
    )


def write_report(result: dict, out_dir: Path, notes: Path | None = None) -> Path:
    """Write out_dir/EVALUATION.md and out_dir/img/*.png; returns the Markdown path."""
    out_dir = Path(out_dir)
    files = _plots(result, out_dir / "img")
    r = result
    lines = [
        "# AVPENet evaluation",
        "",
        f"Checkpoint `{r['checkpoint']}` ({r['params']:,} parameters) on `{r['data']}`: {r['n_clips']} clips "
        f"({r['n_windows']} windows) of {r['n_subjects']} subjects, {r['test_subjects_from']}. "
        "A clip's score is the mean of its 3 s windows' scores (those with a modality), as the gateway "
        "serves it. Regenerate with `avpenet evaluate --data DIR --json OUT.json --report docs`.",
        "",
    ]
    if notes and Path(notes).exists():
        lines += [Path(notes).read_text().strip(), ""]
    lines += _targets_section(r) + _accuracy_section(r, files) + _robustness_section(r, files)
    path = out_dir / "EVALUATION.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _targets_section(r: dict) -> list[str]:
    lines = ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    for t in r["targets"].values():
        pct = (
            "accuracy" in t["description"]
            or "coverage" in t["description"]
            or "rise" in t["description"]
            or "reduction" in t["description"]
            or "relative" in t["description"]
        )
        lines.append(
            f"| {t['description']} | {t['target']} | {_fmt(t['measured'], pct=pct)} | {_fmt(t['met'])} |"
        )
    return lines


def _accuracy_section(r: dict, files: dict[str, str]) -> list[str]:
    lines = ["", "## Accuracy", ""]
    rows = [("fusion", r["fusion"]), ("audio only (same model, face masked)", r["audio_only"])]
    rows.append(("visual only (same model, audio masked)", r["visual_only"]))
    for key, name in (("audio_only_trained", "audio-only model (trained alone)"),
                      ("visual_only_trained", "visual-only model (trained alone)")):  # fmt: skip
        if key in r:
            rows.append((name, r[key]))
    rows += [(f"fusion, {age}s", r["by_age"][age]) for age in C.LABELLED_AGE_GROUPS]
    lines += _metrics_table(rows)
    lines += [
        "",
        "The label-noise column is the MAE of the rater-median label against the latent pain the generator "
        "drew (truth.csv): what outputting the latent pain itself would score. It is not a floor: the "
        "label's conditional median given the latent pain scores lower (docs/DATA.md).",
        "",
        f"![predicted vs true](img/{files['pred_vs_true']})",
        f"![fusion vs single modality](img/{files['modalities']})",
        "",
        f"![Bland-Altman](img/{files['bland_altman']})",
        "",
        "Bland-Altman: bias {bias:+.3f}, 95% limits of agreement {loa_low:+.3f} to {loa_high:+.3f}.".format(
            **r["_bland_altman"]
        ),
        "",
        f"![confusion matrix](img/{files['confusion']}) ![per-age MAE](img/{files['per_age']})",
        "",
    ]
    return lines


def _robustness_section(r: dict, files: dict[str, str]) -> list[str]:
    """Robustness, training and interval sections."""
    lines = [
        "## Robustness",
        "",
        "| condition | MAE | change vs clean | Pearson r | 3-class acc |",
        "|---|---|---|---|---|",
    ]
    for name, m in r["robustness"].items():
        lines.append(
            f"| {name} | {_fmt(m['mae'])} | {100 * m['mae_change']:+.1f}% | {_fmt(m['pearson_r'])} | "
            f"{_fmt(m['accuracy_3class'], pct=True)} |"
        )
    lines += [
        "",
        "Noise: hospital background (`avpenet.synth.noise.hospital_noise`) mixed into every audio window at "
        "the given SNR relative to the window's own level, then re-normalised like the feature code does. "
        "Occlusion: the face track passed through `avpenet.augment.occlude_lower_face` "
        "(mask/pacifier/hand: still, hallucinated lower face, collapsed mouth blendshapes, lost frames) "
        "and re-featurised. Missing: the modality's presence mask set to absent.",
        "",
        f"![robustness](img/{files['robustness']})",
        "",
        *(
            [
                "## Training",
                "",
                "Best epoch {best_epoch} of {epochs_run} ({stopped}), {elapsed_s} s of wall time on the "
                "shared 2-core machine.".format(**r["_training"]),
                "",
                f"![training](img/{files['training']})",
                "",
            ]
            if "training" in files
            else []
        ),
        "## Interval",
        "",
        f"90% interval coverage on test clips: {_fmt(r['interval_coverage_90'], pct=True)} (mean width "
        f"{_fmt(r['interval_mean_width'])} points). The interval is score ± z·s·σ, σ from the log-variance "
        f"head, s {_fitted_on(r.get('_interval') or {})}.",
        "",
    ]
    return lines
