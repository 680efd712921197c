"""The accuracy targets `avpenet evaluate` holds a model to, and when a test set is big enough to judge them.

Why the minimums: on a handful of subjects the figures swing with who happens to be in the set (clips of one
subject move together), so a verdict there says nothing about the model: 4 subjects of a 4-subject synth
set "met" the fusion MAE target the 43 held-out subjects of the default set miss. Below MIN_TEST_SUBJECTS
scored test subjects (MIN_AGE_GROUP_SUBJECTS of that group for the per-group targets) a target's ``met`` is
null and ``not_judged`` says why; a figure that could not be measured (no adult clips, a constant
prediction's Pearson r) is null too, not a miss. The figures themselves are still reported.
Figures of validation subjects (`avpenet evaluate --part val`) get no verdict either: candidates are chosen on
them, so they read better than new subjects would, and the targets are the test subjects' (VALIDATION_PART).
"""

from __future__ import annotations

import numpy as np

from avpenet import contract as C
from avpenet.model import SINGLE_MODALITY_RUNS

# evaluate's keys of the single-modality runs trained beside a run (RUN/audio_only, RUN/visual_only)
SINGLE_MODALITY_DIRS = {f"{sub}_trained": sub for sub in SINGLE_MODALITY_RUNS}

MIN_TEST_SUBJECTS = 10  # scored test subjects before any target is judged (docs/EVALUATION.md)
MIN_AGE_GROUP_SUBJECTS = 10  # test subjects of the group before its own target is judged
TARGETS = {  # the model issue's targets: key -> (description, comparison, threshold)
    "fusion_mae": ("fusion MAE", "<=", 0.89),
    "fusion_mae_ceiling": ("fusion MAE, never above", "<=", 0.95),
    "fusion_pearson_r": ("fusion Pearson r", ">=", 0.89),
    "fusion_accuracy_3class": ("fusion 3-class accuracy", ">=", 0.814),
    "fusion_gain_over_best_single": ("fusion MAE reduction vs best single modality", ">=", 0.15),
    "neonate_mae": ("neonate MAE", "<=", 0.95),
    "adult_mae": ("adult MAE", "<=", 0.95),
    "snr_0_mae_rise": ("MAE rise at SNR 0 dB", "<=", 0.20),
    "occlusion_mae_rise": ("MAE rise with lower face occluded", "<=", 0.20),
    "interval_coverage_low": ("90% interval coverage (lower bound)", ">=", 0.88),
    "interval_coverage_high": ("90% interval coverage (upper bound)", "<=", 0.92),
}
PATH_TARGETS = {  # judged only with --paths (the dataset must carry renders): key -> same shape as TARGETS
    # the same clip uploaded as video vs as audio + its landmarks file: both carry the sound
    "video_vs_landmarks_mae": ("video-path MAE above the audio+landmarks-path MAE (relative)", "<=", 0.05),
}
AGE_TARGETS = {f"{age}_mae": age for age in C.LABELLED_AGE_GROUPS}  # judged on that group's subjects
VALIDATION_PART = (
    "validation subjects, on which candidates are chosen: the targets are judged on the test subjects only"
)


def _measured(r: dict) -> dict[str, float]:
    singles = [r[k]["mae"] for k in ("audio_only", "visual_only", *SINGLE_MODALITY_DIRS) if k in r]
    measured = {
        "fusion_mae": r["fusion"]["mae"],
        "fusion_mae_ceiling": r["fusion"]["mae"],
        "fusion_pearson_r": r["fusion"]["pearson_r"],
        "fusion_accuracy_3class": r["fusion"]["accuracy_3class"],
        "fusion_gain_over_best_single": 1.0 - r["fusion"]["mae"] / min(singles),
        "neonate_mae": r["by_age"]["neonate"]["mae"],
        "adult_mae": r["by_age"]["adult"]["mae"],
        "snr_0_mae_rise": r["robustness"]["snr_0db"]["mae_change"],
        "occlusion_mae_rise": r["robustness"]["lower_face_occluded"]["mae_change"],
        "interval_coverage_low": r["interval_coverage_90"],
        "interval_coverage_high": r["interval_coverage_90"],
    }
    paths = r.get("paths", {})
    if "video" in paths and "audio_landmarks" in paths:
        measured["video_vs_landmarks_mae"] = paths["video"]["mae"] / paths["audio_landmarks"]["mae"] - 1.0
    return measured


def _subjects(n: int, age: str = "") -> str:
    return f"{n} {age + ' ' if age else ''}test subject{'' if n == 1 else 's'}"


def _why_not_judged(key: str, value, r: dict) -> str | None:
    """Why a target gets no verdict (None: it is judged). Needs the subject counts evaluate records."""
    subjects = {age: r["by_age"][age]["n_subjects"] for age in C.LABELLED_AGE_GROUPS}
    total = sum(subjects.values())
    if value is None or not np.isfinite(value):
        return "not measured" + (f": no {AGE_TARGETS[key]} clips" if key in AGE_TARGETS else "")
    if r.get("part") == "val":
        return VALIDATION_PART
    if total < MIN_TEST_SUBJECTS:
        return f"{_subjects(total)}; a verdict needs at least {MIN_TEST_SUBJECTS}"
    if key in AGE_TARGETS and subjects[AGE_TARGETS[key]] < MIN_AGE_GROUP_SUBJECTS:
        age = AGE_TARGETS[key]
        return f"{_subjects(subjects[age], age)}; a verdict needs at least {MIN_AGE_GROUP_SUBJECTS}"
    return None


def judge_targets(r: dict) -> dict:
    """{key: description, target, measured, met}; met is null with ``not_judged`` (the reason) when the
    figure is missing or the test set is too small to judge it (module doc)."""
    measured = _measured(r)
    targets = {**TARGETS, **{k: v for k, v in PATH_TARGETS.items() if k in measured}}
    out = {}
    for key, (desc, op, threshold) in targets.items():
        value = measured[key]
        entry = {"description": desc, "target": f"{op} {threshold:g}", "measured": value, "met": None}
        if why := _why_not_judged(key, value, r):
            entry["not_judged"] = why
        else:
            entry["met"] = bool(value <= threshold if op == "<=" else value >= threshold)
        out[key] = entry
    return out


def unjudged_line(targets: dict) -> str | None:
    """What `avpenet evaluate` prints about targets without a verdict (None when every one has one)."""
    unjudged = [t for t in targets.values() if t["met"] is None]
    sized = [t["not_judged"] for t in unjudged if not t["not_judged"].startswith("not measured")]
    if not unjudged:
        return None
    if {t["not_judged"] for t in unjudged} == {VALIDATION_PART}:
        return f"no target is judged on {VALIDATION_PART}"
    if len(unjudged) == len(targets) and sized:
        return (
            f"the set is too small to judge the targets ({sized[0]}): met is null in the JSON, and the "
            "figures above are no verdict on the model"
        )
    return "targets not judged: " + "; ".join(f"{t['description']} ({t['not_judged']})" for t in unjudged)
