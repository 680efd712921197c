"""`avpenet calibrate`: refit a trained run's 90% interval on validation subjects, weights unchanged.

    avpenet calibrate --checkpoint RUN_DIR --data DIR --split SPLIT.json [--add FRESH_DIR ...] \
        [--only-unknown-age] --out NEW_RUN_DIR

`avpenet train` fits the interval scale (``fusion.interval_scale``) on its validation clips at the end of a
run. When that validation set was small (a run on part of a dataset), the scale is noisy and the interval's
coverage on unseen subjects can miss its 90%. This command refits only the interval scales, with the
very function the training run uses (``train.calibrate_interval``), on the clips of the split's VALIDATION
subjects — never the test subjects — and writes a new run directory: the same weights, the new scale, and
the source run's record (config.json with its training history, its training split.json, finetune.json)
plus an ``interval_calibration`` entry (scale and validation coverage before and after, subjects, clips,
labels digest).

A request that names no age group is scored with the age its clip shows (``fusion.age_head``, fitted on the
same clips, ``avpenet.age_inference``) and has an interval scale of its own (``fusion.unknown_age_scale``),
fitted the same way on the same clips sent without their age group (``train.calibrate_unknown_age`` does
both). ``--only-unknown-age`` refits those alone, so a request that names its age group is answered bit for
bit as before.

``--add FRESH_DIR`` pools every clip of another dataset with those validation clips: a set the model has never
seen, made by `avpenet synth` with a seed of its own. Split conformal calibration is only as good as its
calibration set is large: on 43 subjects a subject bootstrap puts the 90% quantile anywhere from about -11%
to +15% of its value (docs/EVALUATION.md, *The interval*), so a fresh set drawn from the same generator
narrows it at no risk to the test split. A set with
the labels of ``--data`` or of the run's training data is refused (it holds training or test subjects).
`avpenet export` then gives the fusion part (where the scale lives) a new version and leaves the
other parts unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet import data
from avpenet.durable import replace_bytes

HELP = "refit a run's 90% interval scales on the validation subjects of a split (weights unchanged)"
KEPT_FILES = (data.SPLIT_FILE, "finetune.json")  # the source run's training record, true for the new run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="run directory to recalibrate")
    parser.add_argument("--data", type=Path, required=True, help="dataset directory with labels.csv")
    parser.add_argument(
        "--split",
        type=Path,
        default=None,
        help="split.json whose val subjects to use (default: DIR/split.json, else the run's own when DIR "
        "holds the subjects it was trained on)",
    )
    parser.add_argument(
        "--add",
        type=Path,
        action="append",
        default=[],
        metavar="FRESH_DIR",
        help="also calibrate on every clip of this dataset (fresh subjects, another seed); repeatable",
    )
    parser.add_argument(
        "--only-unknown-age",
        action="store_true",
        help="refit only what requests naming no age group are scored with: the age head and their interval "
        "scale (requests with an age group answered exactly as before)",
    )
    parser.add_argument("--out", type=Path, required=True, help="new run directory to write")
    parser.add_argument("--quiet", action="store_true")


def _coverage(model, inputs: list[dict[str, np.ndarray]], scores: np.ndarray) -> tuple[dict, float]:
    """(clip metrics, share of clips inside the served 90% interval) of `model` on these clips."""
    from avpenet.predict import predict_clips, regression_metrics

    pred = predict_clips(model, inputs)
    lo, hi = pred[C.INTERVAL.name][:, 0], pred[C.INTERVAL.name][:, 1]
    return regression_metrics(pred[C.SCORE.name], scores), float(np.mean((scores >= lo) & (scores <= hi)))


def _require_dataset(flag: str, path: Path) -> None:
    """ValueError naming the folder the user gave, not a file inside it (exit 2, cli/main.py)."""
    if not Path(path).is_dir():
        raise ValueError(f"{flag} {path}: no such folder")
    if not (Path(path) / "labels.csv").is_file():
        raise ValueError(f"{flag} {path} is not a dataset: it has no labels.csv")


def _fresh_sets(
    added: list[Path], data_dir: Path, digest_of_data: str, config: dict, quiet: bool
) -> list[tuple[Path, str, list]]:
    """(dir, labels digest, clips) of each added set; ValueError (exit 2) for an empty one or one sharing
    labels or a synthetic plan (the same subjects, whatever parts were rendered) with the data or training."""
    trained = config.get("data") or {}
    known = [  # (labels digest, plan, what it is)
        (digest_of_data, data.read_plan(data_dir), f"the --data set {data_dir}"),
        (trained.get("labels_sha256"), trained.get("plan"), "the set this run was trained on"),
    ]
    sets = []
    for fresh in added:
        _require_dataset("--add", fresh)
        digest, plan = data.labels_digest(fresh), data.read_plan(fresh)
        for other_digest, other_plan, name in known:
            if seen := data.seen_as(digest, plan, other_digest, other_plan):
                same = "has the labels" if seen == "labels" else "is a render of the plan"
                raise ValueError(
                    f"--add {fresh} {same} of {name}, so it holds training or test "
                    f"subjects; add a set made with another seed (avpenet synth --seed N)"
                )
        known.append((digest, plan, f"--add {fresh}"))
        clips = data.load_clips(fresh, None, progress=not quiet)
        if not clips:
            raise ValueError(f"--add {fresh} has no clips")
        sets.append((fresh, digest, clips))
    return sets


def _split(data_dir: Path, checkpoint: Path, config: dict, split_path: Path | None) -> tuple[Path, dict]:
    """(path, split) whose validation subjects calibrate: given, the data's own, or the run's."""
    found = data.split_for(data_dir, checkpoint, config, split_path)
    if found is None:
        raise ValueError(
            f"--data {data_dir} has no {data.SPLIT_FILE} and is not the data {checkpoint} was trained on: "
            "give --split SPLIT.json"
        )
    return found[0], data.read_split(found[0])


def _unknown_age_coverage(model, inputs: list[dict[str, np.ndarray]], scores: np.ndarray) -> float:
    """The 90% interval's coverage of these clips sent without their age group."""
    from avpenet.predict import with_age

    return _coverage(model, [with_age(x, C.UNKNOWN_AGE) for x in inputs], scores)[1]


def recalibrate(
    checkpoint: Path,
    data_dir: Path,
    split_path: Path | None,
    out: Path,
    quiet: bool = True,
    added: list[Path] | None = None,
    only_unknown_age: bool = False,
) -> dict:
    """Refit `checkpoint`'s interval scales on the validation clips (and every clip of `added` sets), write
    the run to `out`; the record. `only_unknown_age`: refit only what requests without an age get."""
    from avpenet.model import load_model, save_model
    from avpenet.train import calibrate_interval, calibrate_unknown_age, restrict

    _require_dataset("--data", data_dir)
    loaded = load_model(checkpoint)
    model, config = loaded.model, loaded.config
    split_path, split = _split(data_dir, checkpoint, config, split_path)
    modality = config.get("modality", "both")
    clips = data.load_clips(data_dir, split["val"], progress=not quiet)
    if not clips:
        raise ValueError(f"no clips of the validation subjects of {split_path} in {data_dir}")
    digest = data.labels_digest(data_dir)  # one digest for the --add checks and the record
    fresh = _fresh_sets(list(added or []), data_dir, digest, config, quiet)
    groups = [clips, *(cl for _, _, cl in fresh)]  # 0: the validation clips, then each added set's
    inputs = [[restrict(dict(c.inputs), modality) for c in cl] for cl in groups]
    scores = [np.array([c.score for c in cl]) for cl in groups]
    before_scale = float(model.fusion.interval_scale.item())
    before_unknown = float(model.fusion.unknown_age_scale.item())
    unknown_before = _unknown_age_coverage(model, inputs[0], scores[0])
    before = [_coverage(model, x, y)[1] for x, y in zip(inputs, scores, strict=True)]
    pooled = ([x for xs in inputs for x in xs], np.concatenate(scores))
    if only_unknown_age:
        scale = config.get("interval_scale", before_scale)  # as recorded, not read back from float32
    else:
        scale = calibrate_interval(model, *pooled)
    age_head = calibrate_unknown_age(model, *pooled, _subjects(groups))["age_head"]
    val, after_cov = _coverage(model, inputs[0], scores[0])
    after = [after_cov, *(_coverage(model, x, y)[1] for x, y in zip(inputs[1:], scores[1:], strict=True))]
    record = {
        "source": str(checkpoint),
        "data": str(data_dir),
        "labels_sha256": digest,
        "split": str(split_path),
        "val_subjects": sorted(split["val"]),
        "val_clips": len(clips),
        "scale_before": before_scale,
        "scale_after": scale,
        "val_coverage_90_before": before[0],
        "val_coverage_90_after": after[0],
        "only_unknown_age": only_unknown_age,
        "unknown_age_scale_before": before_unknown,
        "unknown_age_scale_after": float(model.fusion.unknown_age_scale.item()),
        "val_unknown_age_coverage_90_before": unknown_before,
        "val_unknown_age_coverage_90_after": _unknown_age_coverage(model, inputs[0], scores[0]),
        "age_head": age_head,
        "added": [
            {
                "data": str(path),
                "labels_sha256": fresh_digest,
                "subjects": len({c.subject_id for c in cl}),
                "clips": len(cl),
                "coverage_90_before": before[i],
                "coverage_90_after": after[i],
            }
            for i, (path, fresh_digest, cl) in enumerate(fresh, start=1)
        ],
    }
    skip = ("model", "params") if only_unknown_age else ("model", "params", "unknown_age_calibration")
    extra = {k: v for k, v in config.items() if k not in skip}  # a full refit: an older no-age record goes
    extra.update(unknown_age_interval_scale=record["unknown_age_scale_after"], age_head=age_head)
    if only_unknown_age:  # the shared scale's own record (and the run's validation figures) stay
        extra["unknown_age_calibration"] = record
    else:
        extra.update(
            interval_scale=scale, val={**val, "interval_coverage_90": after_cov}, interval_calibration=record
        )
    save_model(model, out, extra=extra)
    _keep_record(Path(checkpoint), Path(out))
    return record


def _subjects(groups: list[list[data.Clip]]) -> list[str]:
    """Each pooled clip's subject, told apart by set: two sets of other seeds number their subjects alike."""
    return [f"{i}:{c.subject_id}" for i, clips in enumerate(groups) for c in clips]


def _keep_record(checkpoint: Path, out: Path) -> None:
    """The source run's training record, true for the new run too."""
    for name in KEPT_FILES:
        if (checkpoint / name).exists():
            replace_bytes(out / name, (checkpoint / name).read_bytes())  # a copy cut short is no split


def _age_head_line(record: dict) -> str:
    """What requests without an age group get from the age head: refitted, the earlier head kept (it still
    reads the age), or no age read at all (adult_probability NOT_READ)."""
    if not record["fitted"] and record.get("kept_head"):
        why = record["why"].rpartition("; kept")[0]
        return (
            f"no age group: the age is read from the clip by the head the run had, kept (not refitted: {why})"
        )
    if not record["fitted"]:
        return f"no age group: the age is not read from the clip ({record['why']})"
    right = ", ".join(
        f"{path.replace('_', ' ')} {share:.1%}" for path, share in record["in_sample_window_accuracy"].items()
    )
    return (
        f"no age group: the age read from the clip, right for {right} of the {record['windows']} windows it "
        "was fitted on (in-sample; `avpenet evaluate --send-age unknown` measures the test subjects)"
    )


def run(args: argparse.Namespace) -> int:
    from avpenet.model import CONFIG_FILE

    if not (args.checkpoint / CONFIG_FILE).exists():
        print(
            f"avpenet calibrate: {args.checkpoint} is not a run directory (no {CONFIG_FILE})", file=sys.stderr
        )
        return 2
    # A run there (the --checkpoint itself, the committed reference, an exported run) would be replaced in
    # part: its model beside the split and records it had, as `avpenet train --out` used to.
    from avpenet.train import conformal_shortfall, held_run

    if held := held_run(args.out):
        print(
            f"avpenet calibrate: --out {args.out} already holds a run ({', '.join(held)}); give a new folder",
            file=sys.stderr,
        )
        return 2
    r = recalibrate(
        args.checkpoint, args.data, args.split, args.out, args.quiet, args.add, args.only_unknown_age
    )
    lines = [
        f"interval scale {r['scale_before']:.3f} -> {r['scale_after']:.3f}",
        f"  {r['val_clips']} clips of {len(r['val_subjects'])} validation subjects: 90% coverage "
        f"{r['val_coverage_90_before']:.1%} -> {r['val_coverage_90_after']:.1%}",
        f"no age group: scale {r['unknown_age_scale_before']:.3f} -> {r['unknown_age_scale_after']:.3f}, "
        f"validation clips sent without their age covered {r['val_unknown_age_coverage_90_before']:.1%} -> "
        f"{r['val_unknown_age_coverage_90_after']:.1%}",
        _age_head_line(r["age_head"]),
    ]
    for a in r["added"]:
        lines.append(
            f"  + {a['clips']} clips of {a['subjects']} fresh subjects ({a['data']}): 90% coverage "
            f"{a['coverage_90_before']:.1%} -> {a['coverage_90_after']:.1%}"
        )
    pooled = r["val_clips"] + sum(a["clips"] for a in r["added"])
    if not args.only_unknown_age and (shortfall := conformal_shortfall(pooled)):
        lines.append(shortfall)
    print("\n".join([*lines, f"wrote {args.out}"]), flush=True)
    return 0
