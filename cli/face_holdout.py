"""Leave one face out: what a face the model never saw costs (docs/EVALUATION.md, *Faces*).

    python -m cli.face_holdout split --data S3 --face grace_hopper --out DIR [--split SPLIT] [--seed 57]
    python -m cli.face_holdout score --data S3 --run H0=RUN --run H1=RUN --pair H1/H0 [--split SPLIT]

Every subject of an AVPE-Synth set wears one of the plan's source photos (`sources.subject_source`), and the
published reference is tested on faces it was trained on; a patient's face is always new. `split` writes two
split files from SPLIT (default: the reference's): `without.json` (training and validation subjects whose
face is not FACE) and `matched.json` (as many training subjects drawn at random from every face, the same
validation subjects), both with SPLIT's test part; train one model on each (`avpenet train --split`), so
both saw as many subjects and early-stop on the same subjects. `score` scores the runs on the tracked video
of SPLIT's validation and test subjects (the video path of `avpenet evaluate --paths`) by the face each
subject wears, and gives each pair A/B's change of MAE in per cent with a paired subject-bootstrap 95%
interval (a resample takes a subject's clips for both runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def faces_of(data_dir: Path) -> dict[str, str]:
    """{subject_id: the photo it wears} of a synthetic set (ValueError for data without a plan)."""
    from avpenet import data
    from avpenet.synth import dataset, sources

    plan = data.read_plan(data_dir)
    if plan is None:
        raise ValueError(
            f"{data_dir} has no plan.json: only an AVPE-Synth set says which face each subject wears"
        )
    faces = sources.plan_faces(plan)
    return {
        s.subject_id: sources.subject_source(plan["seed"], s.index, faces)
        for s in dataset.make_subjects(plan["seed"], plan["n_subjects"])
    }


def holdout_splits(
    split: dict[str, list[str]], face: dict[str, str], held: str, seed: int
) -> dict[str, dict]:
    """{'without': ..., 'matched': ...}: the split files `split` writes (see the module)."""
    if held not in set(face.get(s) for s in split["train"]):
        known = sorted({face[s] for s in split["train"] if s in face})
        raise ValueError(f"no training subject wears face {held!r}; the split's faces: {', '.join(known)}")
    train = [s for s in split["train"] if face[s] != held]
    val = [s for s in split["val"] if face[s] != held]
    drawn = np.random.default_rng(seed).choice(split["train"], size=len(train), replace=False)
    return {
        "without": {"train": train, "val": val, "test": list(split["test"])},
        "matched": {"train": sorted(drawn.tolist()), "val": val, "test": list(split["test"])},
    }


def by_face(
    errors: dict[str, np.ndarray], subjects: np.ndarray, faces: np.ndarray, pairs: list[tuple[str, str]]
) -> dict[str, dict]:
    """Per face and for all clips: each run's MAE from its absolute errors, and each pair's change in per cent
    with its subject-bootstrap 95% interval."""
    from avpenet.evaluate_paths import subject_resamples

    out = {}
    for name in [*sorted(set(faces)), "all"]:
        m = np.ones(len(faces), bool) if name == "all" else faces == name
        row: dict = {"subjects": len(set(subjects[m])), "clips": int(m.sum())}
        row |= {run: round(float(e[m].mean()), 4) for run, e in errors.items()}
        picks = list(subject_resamples(subjects[m]))
        for a, b in pairs:
            ea, eb = errors[a][m], errors[b][m]
            boots = [ea[i].mean() / eb[i].mean() - 1 for i in picks]
            row[f"{a}/{b} %"] = round(100 * float(ea.mean() / eb.mean() - 1), 1)
            row[f"{a}/{b} ci95 %"] = [round(100 * float(q), 1) for q in np.percentile(boots, [2.5, 97.5])]
        out[name] = row
    return out


def score(data_dir: Path, runs: dict[str, Path], pairs: list[tuple[str, str]], split: dict) -> dict:
    """`by_face` of each run's video-path errors on the split's validation and test subjects (the clips
    decoded once, every run scoring the same ones)."""
    from avpenet import data
    from avpenet.evaluate_paths import clip_scores, path_clips
    from avpenet.model import load_model

    face = faces_of(data_dir)
    keep = set(split["val"]) | set(split["test"])
    clips = path_clips(data_dir, [r for r in data.read_labels(data_dir) if r["subject_id"] in keep], "video")
    true = np.array([c.score for c in clips])
    errors = {}
    for name, run in runs.items():
        ckpt = load_model(run)
        errors[name] = np.abs(clip_scores(ckpt.model, clips, ckpt.config.get("modality", "both")) - true)
    subjects = np.array([c.subject_id for c in clips])
    return by_face(errors, subjects, np.array([face[s] for s in subjects]), pairs)


def _run(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=RUN_DIR")
    return name, Path(path)


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition("/")
    if not (sep and a and b):
        raise argparse.ArgumentTypeError(f"{text!r}: expected A/B (two run names)")
    return a, b


def main(argv: list[str] | None = None) -> int:
    from avpenet import data
    from avpenet.model import REFERENCE_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in (split_cmd := sub.add_parser("split")), (score_cmd := sub.add_parser("score")):
        cmd.add_argument("--data", required=True, type=Path, help="an AVPE-Synth set (its plan.json)")
        cmd.add_argument(
            "--split", type=Path, default=REFERENCE_DIR / "split.json", help="default: the reference's"
        )
    split_cmd.add_argument("--face", required=True, help="the photo left out, e.g. grace_hopper")
    split_cmd.add_argument("--out", required=True, type=Path, help="folder for without.json and matched.json")
    split_cmd.add_argument("--seed", type=int, default=0, help="draws matched.json's training subjects")
    score_cmd.add_argument(
        "--run", type=_run, action="append", required=True, help="NAME=RUN_DIR, repeatable"
    )
    score_cmd.add_argument(
        "--pair", type=_pair, action="append", default=[], help="A/B: A's change against B"
    )
    score_cmd.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        split = data.read_split(args.split)
        if args.command == "split":
            made = holdout_splits(split, faces_of(args.data), args.face, args.seed)
            args.out.mkdir(parents=True, exist_ok=True)
            for name, part in made.items():
                (args.out / f"{name}.json").write_text(json.dumps(part, indent=1) + "\n")
                print(
                    f"{args.out / name}.json: {', '.join(f'{k} {len(v)}' for k, v in part.items())} subjects"
                )
            return 0
        runs = dict(args.run)
        if missing := sorted({n for pair in args.pair for n in pair} - set(runs)):
            raise ValueError(f"--pair names run(s) not given with --run: {', '.join(missing)}")
        result = score(args.data, runs, args.pair, split)
    except (OSError, ValueError) as exc:
        print(f"face_holdout: {exc}", file=sys.stderr)
        return 2
    for name, row in result.items():
        print(name, json.dumps(row))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
