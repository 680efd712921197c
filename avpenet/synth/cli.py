"""`avpenet synth`: write an AVPE-Synth dataset (labels.csv, truth.csv, audio/, visual/, video/).

    avpenet synth --out DIR --parts test,val,train --resume [--split SPLIT.json]

renders subject by subject, held-out subjects first, and continues where a stopped run left off. Without
--split the order comes from the split `avpenet train --seed SEED` makes of the whole set (written to
DIR/.progress/split.json for reference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from avpenet.argtypes import count, positive_int
from avpenet.synth import dataset, progress, skin, sources

HELP = "generate the AVPE-Synth dataset (labels.csv + audio WAV + face-track NPZ + rendered MP4s)"


def _render_count(text: str) -> int | None:
    """--render-video: "all" (None) or a count."""
    if text == "all":
        return None
    try:
        return count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: give all, or a count of clips (0: none)") from None


def _skin_tones(text: str) -> tuple[int | None, ...]:
    """`--skin-tone`: comma-separated Monk Skin Tones 1-10 or 'photo'."""
    try:
        return skin.check_tones(
            tuple(None if t.strip() == skin.AS_PHOTOGRAPHED else int(t) for t in text.split(",") if t.strip())
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give Monk Skin Tones 1-10 or {skin.AS_PHOTOGRAPHED!r}, comma-separated"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data")
    parser.add_argument(
        "--subjects", type=positive_int, default=dataset.DEFAULT_SUBJECTS,
        help=f"number of subjects (default {dataset.DEFAULT_SUBJECTS}: {dataset.DEFAULT_NEONATES} neonates)",
    )  # fmt: skip
    parser.add_argument(
        "--clips", type=positive_int, default=None,
        help=f"number of clips (default: subjects × {dataset.DEFAULT_CLIPS}/{dataset.DEFAULT_SUBJECTS})",
    )  # fmt: skip
    parser.add_argument(
        "--render-video", default="all", type=_render_count, metavar="N|all",
        help="render every clip that has a face as MP4 (default: all; its .npz is then the tracked MP4), or "
        "only N clean clips spread over the pain range (0: none, fast, synthetic .npz tracks only)",
    )  # fmt: skip
    parser.add_argument("--workers", type=positive_int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--resume", action="store_true",
        help="skip the clips a stopped run with the same options finished (DIR/.progress/)",
    )  # fmt: skip
    parser.add_argument(
        "--parts", default=None,
        help="make only these parts of the split (e.g. test,val,train), subject by subject in that order",
    )  # fmt: skip
    parser.add_argument(
        "--split", type=Path, default=None,
        help="with --parts: a split.json (default: the split `avpenet train --seed SEED` makes of the set)",
    )  # fmt: skip
    parser.add_argument(
        "--faces", default=",".join(sources.DEFAULT_FACES),
        help="comma-separated source photos each subject's face is drawn from (default: the reference's "
        f"training data's; known: {', '.join(sorted(sources.SOURCES))}; docs/DATA.md, Face)",
    )  # fmt: skip
    parser.add_argument(
        "--skin-tone", type=_skin_tones, default=(None,), metavar="N[,N...]",
        help="recolour the faces' skin to this Monk Skin Tone (1-10), or to one of several drawn per subject "
        f"('{skin.AS_PHOTOGRAPHED}': as photographed, the default); a check of the tracker and the model on "
        "darker skin colour, the same faces, not other people (docs/DATA.md, Skin tone)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar, nor mediapipe's log lines")


def _default_split(args: argparse.Namespace) -> Path:
    """The split `avpenet train --seed SEED` makes of this set (labels depend on the plan only), as a file."""
    from avpenet import data

    rows = [dataset.label_row(p) for p in dataset.plan(args.seed, args.subjects, args.clips)]
    path = Path(args.out) / progress.PROGRESS_DIR / data.SPLIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data.write_split(data.make_split(rows, args.seed), path)
    return path


def run(args: argparse.Namespace) -> int:
    render = args.render_video
    if not args.resume and args.out.is_dir() and any(args.out.iterdir()):
        print(
            f"avpenet synth: {args.out} already holds files; give a new or empty folder, or --resume to "
            "continue the run that made them",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    try:
        subjects = None
        if args.parts is not None:
            split = args.split or _default_split(args)
            subjects = progress.subject_order(split, [p for p in args.parts.split(",") if p])
        summary = dataset.generate(
            args.out, seed=args.seed, n_subjects=args.subjects, n_clips=args.clips, render=render,
            workers=args.workers, progress=not args.quiet, subjects=subjects, resume=args.resume,
            faces=tuple(f for f in args.faces.split(",") if f), skin_tones=args.skin_tone,
        )  # fmt: skip
    except ValueError as exc:  # a split of another set, an unknown part, a resume with other options
        print(f"avpenet synth: {exc}", file=sys.stderr)
        return 2
    report = dataset.summary_dict(summary) | {"seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(report))
    return 0
