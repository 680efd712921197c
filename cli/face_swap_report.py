"""The same clips with another face: what a model does on a source photo it was not trained on.

    python -m cli.face_swap_report --default S --other SJ [--checkpoint RUN_DIR] [--json OUT.json]

S and SJ are two renders of one plan's subjects with other faces, e.g. `avpenet synth --out S --parts test
--faces astronaut,grace_hopper` and the same with `--faces jesper_pedersen`: labels, sound, driven expressions
and the proportions applied to the photo's mesh are the same clip for clip, only the photo and its mesh differ
(tests/synth/test_faces.py). Or the same faces with darker skin (`avpenet synth --skin-tone N`,
tests/synth/test_skin_tone.py): only the skin's colour differs. Every clip of the checkpoint's test subjects
that has an MP4 in both is scored on the video path, as `avpenet evaluate --paths` scores it (the MP4
tracked, its sound, a face never found masked), in both sets. Printed: MAE in each set and their difference,
with a 95% interval from resampling subjects (paired: a resample takes a subject's clips from both sets), the
bias (mean score - label) in each, and the share of its windows' frames in which the tracker found a usable
face, overall, by the face each subject has in S, by age group and, where the other set drew a skin tone per
subject, by that tone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def video_scores(
    model, data_dir: Path, rows: list[dict[str, str]], modality: str
) -> dict[str, tuple[float, float]]:
    """{clip_id: (the video path's score, the share of its windows' frames with a usable face)}, as
    `avpenet evaluate --paths` scores it."""
    from avpenet import contract as C
    from avpenet.evaluate_paths import path_scores

    clips, pred = path_scores(model, data_dir, rows, "video", modality)
    return {
        c.clip_id: (float(p), float(c.inputs[C.FRAME_MASK.name].mean()))
        for c, p in zip(clips, pred, strict=True)
    }


def paired(
    err_a: np.ndarray,
    err_b: np.ndarray,
    subjects: np.ndarray,
    seed: int = 0,
    faces: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """From signed errors (score - label): MAE and bias of each, the MAE's change b - a and its
    subject-bootstrap 95% interval; with `faces` (each clip's share of frames with a usable face in a and
    in b), their means."""
    from avpenet.evaluate_paths import subject_resamples

    bias_a, bias_b = float(err_a.mean()), float(err_b.mean())
    err_a, err_b = np.abs(err_a), np.abs(err_b)
    diffs = [float(err_b[i].mean() - err_a[i].mean()) for i in subject_resamples(subjects, seed=seed)]
    shares = {} if faces is None else {"face_frames_default": float(faces[0].mean()),
                                       "face_frames_other": float(faces[1].mean())}  # fmt: skip
    return shares | {
        "n_clips": int(err_a.size),
        "n_subjects": len(set(subjects)),
        "mae_default": float(err_a.mean()),
        "mae_other": float(err_b.mean()),
        "difference": float(err_b.mean() - err_a.mean()),
        "difference_ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "bias_default": bias_a,
        "bias_other": bias_b,
    }


def groupings(plan: dict, other_plan: dict | None, subjects: np.ndarray, age: np.ndarray) -> dict:
    """Each clip's group under every grouping reported: the face its subject wears in the default set, its
    age group, and, where the other set's subjects each drew one of several skin tones (`synth --skin-tone
    photo,6,8,10`), the tone it wears there."""
    from avpenet.synth import dataset, sources

    seed, faces = plan["seed"], sources.plan_faces(plan)
    index = {s.subject_id: s.index for s in dataset.make_subjects(seed, plan["n_subjects"])}
    out = {
        "face_in_default": np.array([sources.subject_source(seed, index[s], faces) for s in subjects]),
        "age_group": age,
    }
    worn = dataset.subject_skin_tones(other_plan, sorted(set(subjects)))
    if worn is not None and len(set(worn.values())) > 1:
        out["skin_tone_in_other"] = np.array([worn[s] for s in subjects])
    return out


def group_order(groups: np.ndarray) -> list[str]:
    """A grouping's groups in the order printed: by name, skin tones as photographed first and then by number
    (MST 6 before MST 10)."""
    from avpenet.synth.skin import AS_PHOTOGRAPHED, tone_order

    def key(g: str) -> tuple:
        return (0, tone_order(g), "") if g == AS_PHOTOGRAPHED or g.isdigit() else (1, 0, g)

    return sorted({str(g) for g in groups}, key=key)


def report(default: Path, other: Path, checkpoint: Path | None) -> dict:
    from avpenet import data
    from avpenet.model import REFERENCE_DIR, load_model

    plan = data.read_plan(default)
    if not data.same_subjects(plan, data.read_plan(other)):  # ids alone match any seed's
        raise ValueError(
            f"{default} and {other} are not renders of one plan (plan.json: seed, subjects, clips)"
        )
    checkpoint = Path(checkpoint) if checkpoint is not None else REFERENCE_DIR
    ckpt = load_model(checkpoint)
    modality = ckpt.config.get("modality", "both")
    found = data.split_for(default, checkpoint, ckpt.config)
    if found is None or data.split_for(other, checkpoint, ckpt.config) is None:
        raise ValueError("both sets must hold the checkpoint's test subjects (renders of its plan)")
    test = set(data.read_split(found[0])["test"])
    rows = {d: [r for r in data.read_labels(d) if r["subject_id"] in test] for d in (default, other)}
    scores = {d: video_scores(ckpt.model, d, rows[d], modality) for d in (default, other)}
    common = sorted(set(scores[default]) & set(scores[other]))
    truth = {r["clip_id"]: r for r in rows[default]}
    true = np.array([float(truth[c]["score"]) for c in common])
    (err_a, face_a), (err_b, face_b) = (np.array([scores[d][c] for c in common]).T for d in (default, other))
    err_a, err_b = err_a - true, err_b - true
    subjects = np.array([truth[c]["subject_id"] for c in common])
    age = np.array([truth[c]["age_group"] for c in common])
    out = {"checkpoint": str(checkpoint), "default": str(default), "other": str(other),
           "all": paired(err_a, err_b, subjects, faces=(face_a, face_b))}  # fmt: skip
    for key, groups in groupings(plan, data.read_plan(other), subjects, age).items():
        out[key] = {}
        for g in group_order(groups):
            k = groups == g
            out[key][g] = paired(err_a[k], err_b[k], subjects[k], faces=(face_a[k], face_b[k]))
    return out


def lines(result: dict) -> list[str]:
    def row(name: str, r: dict) -> str:
        lo, hi = r["difference_ci95"]
        faces = (
            f"; usable face in {r['face_frames_default']:.1%} -> {r['face_frames_other']:.1%} of frames"
            if "face_frames_default" in r
            else ""
        )
        return (
            f"{name}: {r['n_clips']} clips of {r['n_subjects']} subjects, MAE {r['mae_default']:.3f} -> "
            f"{r['mae_other']:.3f} ({r['difference']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}); bias "
            f"{r['bias_default']:+.2f} -> {r['bias_other']:+.2f}{faces}"
        )

    out = [row("all", result["all"])]
    for key in ("face_in_default", "age_group", "skin_tone_in_other"):
        out += [row(f"{key} {g}", r) for g, r in result.get(key, {}).items()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--default", required=True, type=Path, help="a render of the subjects with the faces compared against"
    )
    parser.add_argument(
        "--other", required=True, type=Path, help="the same subjects rendered with other faces"
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="run directory (default: the reference)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        result = report(args.default, args.other, args.checkpoint)
    except (OSError, ValueError) as exc:
        print(f"face_swap_report: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines(result)))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
