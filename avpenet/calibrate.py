"""`avpenet calibrate`: refit a trained run's 90% interval on validation subjects, weights unchanged.

    avpenet calibrate --checkpoint RUN_DIR --data DIR --split SPLIT.json --out NEW_RUN_DIR

`avpenet train` fits the interval scale (``fusion.interval_scale``) on its validation clips at the end of a
run. When that validation set was small (a run on part of a dataset), the scale is noisy and the interval's
coverage on unseen subjects can miss its 90%. This command refits only that scale, with the very function the
training run uses (``train.calibrate_interval``), on the clips of the split's VALIDATION subjects — never the
test subjects — and writes a new run directory: the same weights, the new scale, and the source run's record
(config.json with its training history, its training split.json, finetune.json) plus an
``interval_calibration`` entry (scale and validation coverage before and after, subjects, clips, labels
digest). `avpenet export` then gives the fusion part (where the scale lives) a new version and leaves the
other parts unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet import data

HELP = "refit a run's 90% interval scale on the validation subjects of a split (weights unchanged)"
KEPT_FILES = (data.SPLIT_FILE, "finetune.json")  # the source run's training record, true for the new run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="run directory to recalibrate")
    parser.add_argument("--data", type=Path, required=True, help="dataset directory with labels.csv")
    parser.add_argument(
        "--split",
        type=Path,
        default=None,
        help="split.json whose val subjects to use (default: DIR/split.json)",
    )
    parser.add_argument("--out", type=Path, required=True, help="new run directory to write")
    parser.add_argument("--quiet", action="store_true")


def _coverage(model, inputs: list[dict[str, np.ndarray]], scores: np.ndarray) -> tuple[dict, float]:
    """(clip metrics, share of clips inside the served 90% interval) of `model` on these clips."""
    from avpenet.predict import predict_clips, regression_metrics

    pred = predict_clips(model, inputs)
    lo, hi = pred[C.INTERVAL.name][:, 0], pred[C.INTERVAL.name][:, 1]
    return regression_metrics(pred[C.SCORE.name], scores), float(np.mean((scores >= lo) & (scores <= hi)))


def recalibrate(
    checkpoint: Path, data_dir: Path, split_path: Path | None, out: Path, quiet: bool = True
) -> dict:
    """Refit `checkpoint`'s interval scale on the validation clips, write the run to `out`; the record."""
    from avpenet.model import load_model, save_model
    from avpenet.train import calibrate_interval, restrict

    split_path = split_path or Path(data_dir) / data.SPLIT_FILE
    split = data.read_split(split_path)
    loaded = load_model(checkpoint)
    model, config = loaded.model, loaded.config
    modality = config.get("modality", "both")
    clips = data.load_clips(data_dir, split["val"], progress=not quiet)
    if not clips:
        raise SystemExit(
            f"avpenet calibrate: no clips of the validation subjects of {split_path} in {data_dir}"
        )
    inputs = [restrict(dict(c.inputs), modality) for c in clips]
    scores = np.array([c.score for c in clips])
    before_scale = float(model.fusion.interval_scale.item())
    _, before_cov = _coverage(model, inputs, scores)
    scale = calibrate_interval(model, inputs, scores)
    val, after_cov = _coverage(model, inputs, scores)
    record = {
        "source": str(checkpoint),
        "data": str(data_dir),
        "labels_sha256": data.labels_digest(data_dir),
        "split": str(split_path),
        "val_subjects": sorted(split["val"]),
        "val_clips": len(clips),
        "scale_before": before_scale,
        "scale_after": scale,
        "val_coverage_90_before": before_cov,
        "val_coverage_90_after": after_cov,
    }
    extra = {k: v for k, v in config.items() if k not in ("model", "params")}
    extra.update(
        interval_scale=scale, val={**val, "interval_coverage_90": after_cov}, interval_calibration=record
    )
    save_model(model, out, extra=extra)
    for name in KEPT_FILES:
        if (Path(checkpoint) / name).exists():
            shutil.copyfile(Path(checkpoint) / name, Path(out) / name)
    return record


def run(args: argparse.Namespace) -> int:
    if not (args.checkpoint / "config.json").exists():
        print(
            f"avpenet calibrate: {args.checkpoint} is not a run directory (no config.json)", file=sys.stderr
        )
        return 2
    r = recalibrate(args.checkpoint, args.data, args.split, args.out, args.quiet)
    print(
        f"interval scale {r['scale_before']:.3f} -> {r['scale_after']:.3f} on {r['val_clips']} clips of "
        f"{len(r['val_subjects'])} validation subjects; 90% coverage there "
        f"{r['val_coverage_90_before']:.1%} -> {r['val_coverage_90_after']:.1%}; wrote {args.out}",
        flush=True,
    )
    return 0
