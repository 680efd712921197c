"""`avpenet synth`: write an AVPE-Synth dataset (labels.csv, truth.csv, audio/, visual/, video/).

    avpenet synth --out DIR --split SPLIT.json --parts test,val,train --resume

renders subject by subject, held-out subjects first, and continues where a stopped run left off.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from avpenet.synth import dataset, progress

HELP = "generate the AVPE-Synth dataset (labels.csv + audio WAV + face-track NPZ + rendered MP4s)"


def _render_count(text: str) -> int | None:
    """--render-video: "all" (None) or a count."""
    return None if text == "all" else int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data")
    parser.add_argument(
        "--subjects", type=int, default=dataset.DEFAULT_SUBJECTS,
        help=f"number of subjects (default {dataset.DEFAULT_SUBJECTS}: {dataset.DEFAULT_NEONATES} neonates)",
    )  # fmt: skip
    parser.add_argument(
        "--clips", type=int, default=None,
        help=f"number of clips (default: subjects × {dataset.DEFAULT_CLIPS}/{dataset.DEFAULT_SUBJECTS})",
    )  # fmt: skip
    parser.add_argument(
        "--render-video", default="all", type=_render_count, metavar="N|all",
        help="render every clip that has a face as MP4 (default: all; its .npz is then the tracked MP4), or "
        "only N clean clips spread over the pain range (0: none, fast, synthetic .npz tracks only)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--resume", action="store_true",
        help="skip the clips a stopped run with the same options finished (DIR/.progress/)",
    )  # fmt: skip
    parser.add_argument(
        "--split", type=Path, default=None,
        help="split.json: make only the subjects of --parts, subject by subject in that order",
    )  # fmt: skip
    parser.add_argument(
        "--parts", default="test,val,train",
        help="with --split: which parts, in which order (default: test,val,train)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    render = args.render_video
    if args.subjects < 1 or args.workers < 1 or (render is not None and render < 0):
        print("avpenet synth: --subjects and --workers must be ≥ 1, --render-video ≥ 0", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        subjects = None
        if args.split is not None:
            subjects = progress.subject_order(args.split, [p for p in args.parts.split(",") if p])
        summary = dataset.generate(
            args.out, seed=args.seed, n_subjects=args.subjects, n_clips=args.clips, render=render,
            workers=args.workers, progress=not args.quiet, subjects=subjects, resume=args.resume,
        )  # fmt: skip
    except ValueError as exc:  # a split of another set, an unknown part, a resume with other options
        print(f"avpenet synth: {exc}", file=sys.stderr)
        return 2
    report = dataset.summary_dict(summary) | {"seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(report))
    return 0
