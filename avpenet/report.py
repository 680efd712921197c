"""Markdown evaluation report; its PNG plots are drawn by report_plots.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet.durable import replace_text
from avpenet.report_plots import plots

METRIC_KEYS = ("mae", "rmse", "pearson_r", "icc", "accuracy_3class", "macro_f1")


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, int):
        return str(v)
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


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
    files = plots(result, out_dir / "img")
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
    replace_text(path, "\n".join(lines) + "\n")  # a failed rerun leaves the last report whole
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
