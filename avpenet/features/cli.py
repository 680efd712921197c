"""`avpenet features --data DIR`: decode, face-track and featurise a dataset into DIR/features/."""

from __future__ import annotations

import argparse
import sys
import time

from avpenet.argtypes import positive_int

HELP = "decode and face-track the clips of DIR/labels.csv into a feature cache under DIR/features/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder holding labels.csv")
    parser.add_argument("--workers", type=positive_int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--force", action="store_true", help="recompute clips that are already up to date")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any clip fails to decode")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, nor mediapipe's log lines")


def run(args: argparse.Namespace) -> int:
    from avpenet.features.cache import build_cache, cache_dir
    from avpenet.machine import per_machine

    start = time.monotonic()
    try:
        manifest = build_cache(
            args.data, workers=max(1, args.workers), force=args.force, progress=not args.quiet
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"avpenet features: {exc}", file=sys.stderr)
        return 2
    m = manifest
    print(
        f"{m['clips']} clips: {m['extracted']} extracted now, {m['skipped_up_to_date']} already up to date, "
        f"{m['failed']} failed ({time.monotonic() - start:.1f} s). Cache {cache_dir(args.data)}: "
        f"{m['cached']} clips, {m['windows']} windows; face tracks from MP4 via FaceLandmarker: "
        f"{m['from_video_with_tracker']}, from .npz: {m['from_npz_track']}, none: {m['without_visual']}; "
        f"usable face frames {100 * m['usable_frame_share']:.0f}%; MP4s tracked in this run (no matching "
        f"tracking stamp): {m['tracked_this_run']}"
    )
    # The same render tracked on another CPU differs in its last bits (avpenet/machine.py).
    if m["tracked_on"]:
        print(f"  face tracks made on: {per_machine(m['tracked_on'])}")
    tracking = {"tracking_failed": "no face in any frame", "tracking_partial": "a face in < 50% of frames"}
    for key, what in tracking.items():
        if m[key]:
            print(f"  tracker, {what}: {len(m[key])} MP4 clip(s): {', '.join(m[key])}", file=sys.stderr)
    for clip_id, error in manifest["errors"].items():
        print(f"  failed {clip_id}: {error}", file=sys.stderr)
    if manifest["errors"] and args.strict:
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="avpenet features", description=HELP)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
