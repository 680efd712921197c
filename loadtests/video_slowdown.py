"""The video admission when the box slows down all at once: what a clip in flight costs when its estimate
turns out wrong.

`python -m loadtests.video_slowdown` starts the local stack (Triton + the gateway app, no peers), sends the
bench's 3-s MP4 from `--concurrency` closed-loop clients (the bench's clients: a refused one waits its
Retry-After) and, `--hog-at` seconds into a `--measure-s` window, starts `--hog-procs` busy-looping
processes for `--hog-s` seconds. These run at normal priority, while the stack runs niced as the bench runs
it, so they take most of the cores. It prints the clips answered, errors by kind with when they were
answered, and the gateway's video admission share at the window's start and end.

This stands in for a noisy neighbour, which no bench run can make on demand (docs/bench-notes.md, the video
re-runs of 2026-12-03). The figures are measurements for docs, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avpenet.argtypes import count, positive_int, positive_number, seconds_from

HOG = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass\n"


def hog(procs: int, seconds: float) -> None:
    """`procs` processes that each keep a core busy for `seconds`; returns when all have ended."""
    running = [subprocess.Popen([sys.executable, "-c", HOG, str(seconds)]) for _ in range(procs)]
    for p in running:
        p.wait()


def summary(done: Sequence[Any], seconds: float, share: tuple[float | None, float | None]) -> str:
    """What a run did: clips answered (rate, p99), failures by kind with when they were answered (`done`:
    the bench's `Done` records of the window), the admission share at the window's start and end."""
    from loadtests import bench
    from loadtests import benchreport as br

    ok = [d.latency_ms for d in done if d.ok]
    failed = [d for d in done if not d.ok]
    p99 = f"{br.percentile(ok, 99) / 1000:.1f} s" if ok else "-"
    lines = [f"answered {len(ok)} clips in {seconds:.0f} s ({len(ok) / seconds:.2f} clips/s), p99 {p99}"]
    for kind, ms in sorted(bench.error_latencies(failed).items()):
        lines.append(
            f"  {kind} x{len(ms)}: answered after {min(ms) / 1000:.1f} s (median "
            f"{statistics.median(ms) / 1000:.1f} s, at most {max(ms) / 1000:.1f} s)"
        )
    lines.append("  video admission share: " + " -> ".join(bench.share_text(v) for v in share))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from loadtests import bench, clips, stagetime
    from preprocess_service.stack import LocalStack

    parser = argparse.ArgumentParser(prog="python -m loadtests.video_slowdown", description=__doc__)
    # checked when parsed, before the clips are built and the stack started
    parser.add_argument("--concurrency", type=positive_int, default=32)
    parser.add_argument("--measure-s", type=positive_number, default=90.0)
    parser.add_argument(
        "--hog-at", type=seconds_from(0.0, "the hog starts this far into the measured window"), default=20.0,
        help="seconds into the window",
    )  # fmt: skip
    parser.add_argument("--hog-s", type=positive_number, default=25.0)
    parser.add_argument("--hog-procs", type=count, default=2, help="0: no slowdown (the baseline)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="avpenet-slowdown-") as work:
        clips.build(Path(work), [next(iter(clips.MIXES["video"]))])
        parts = bench.payload(Path(work), "video")
    limits = bench.stack_limits()
    timing = bench.Timing(
        warmup_s=5.0, measure_s=args.measure_s, warmup_max_s=40.0, min_requests=8,
        measure_max_s=args.measure_s + 60.0,
    )  # fmt: skip
    repo = bench.PROJECT_ROOT / "model_repository"
    deployments = bench.stack_deployments(limits)
    with LocalStack(
        repo=repo, grpc_port=None, max_replicas=1, args={"limits": limits}, deployments=deployments
    ) as stack:
        url = bench.urls(stack.http_url)["avpenet"]
        gateway = [f"{stack.http_url}/metrics"]

        def share() -> float | None:
            return stagetime.admit_share(stagetime.scrape(gateway))

        def start() -> float | None:
            if args.hog_procs:
                later = threading.Timer(args.hog_at, hog, (args.hog_procs, args.hog_s))
                later.daemon = True
                later.start()
            return share()

        done, t0, t1, first, last = asyncio.run(
            bench.closed_loop(url, parts, args.concurrency, timing, start, share)
        )
    print(summary(done, t1 - t0, (first, last)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
