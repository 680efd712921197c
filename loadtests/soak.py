"""`avpenet soak`: the load test held for an hour (configurable) against the real stack, with the RSS of
every stack process sampled and its slope after warm-up judged, on top of zero errors.

A leak shows as a steady slope, not as growth from start to end (warm-up fills caches, ORT arenas and
mediapipe graphs in the first minutes): each process's RSS after `--warmup` is fitted by least squares, over
the whole judged span and over each of its halves, and the soak fails when a process grows faster than
`--max-slope` percent of its size per minute in BOTH halves. A leak climbs all along; a one-off step (the
first 60 s clip's buffers, a shared-memory pool growing once) or a hump that is given back climbs in one
half only, and on a one-hour run would otherwise fail a bound this tight.
`--memprofile N` also has the gateway and FeatureExtractor replicas write tracemalloc growth and gc object
counts every N s (preprocess_service/memprofile.py), summarised at the end. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil

from avpenet.argtypes import non_negative_number, positive_number
from loadtests import run as loadtest

HELP = "Soak: an hour of mixed load (--duration); zero errors, no process's RSS slope above a bound."
MAX_SLOPE_PCT_PER_MIN = 0.05  # 3% an hour: above it a process is leaking, not settling
WARMUP_S = 300.0
MIN_PROCESS_MB = 20.0  # processes smaller than this are not judged (a 1 MB wobble would be 5%)
Series = dict[str, list[tuple[float, float]]]  # process label -> [(seconds, rss MB)]


def _is_locust(proc: psutil.Process) -> bool:
    try:
        return any("locust" in part for part in proc.cmdline())
    except psutil.Error:
        return False


def label(proc: psutil.Process) -> str:
    """A readable, stable name per process: `tritonserver`, `stub:fusion`, `ray::ServeReplica:...` + pid."""
    cmd = proc.cmdline()
    head = os.path.basename(cmd[0]) if cmd else proc.name()
    if "triton_python_backend_stub" in head and len(cmd) > 1:
        match = re.search(r"/([^/]+)/\d+/model\.py", cmd[1])
        head = f"stub:{match.group(1) if match else '?'}"
    elif head.startswith("ray::"):  # Ray retitles a worker per call (`...Gateway.handle_request`): one name
        head = head.split(" ")[0].split(".")[0]
    return f"{head}[{proc.pid}]"


def stack_processes() -> list[psutil.Process]:
    """The stack this process started (Triton, its stubs, Ray's processes), without the locust client."""
    children = psutil.Process().children(recursive=True)
    load = {p.pid for p in children if _is_locust(p)}
    out = []
    for child in children:
        try:
            if child.pid not in load and child.ppid() not in load:
                out.append(child)
        except psutil.Error:
            continue
    return out


def sample() -> dict[str, float]:
    """RSS in MB per stack process, by label."""
    rss = {}
    for proc in stack_processes():
        try:
            rss[label(proc)] = proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return rss


def stack_rss_mb() -> float:
    return sum(sample().values())


def load_running() -> bool:
    """True while locust runs: RSS is sampled only under load, never during start-up or teardown."""
    return any(_is_locust(p) for p in psutil.Process().children(recursive=True))


Row = tuple[float, float, float, float, float]  # MB after warm-up, MB at end, slope, first half, second half


def _pct_per_min(t: np.ndarray, mb: np.ndarray) -> float:
    if len(t) < 3 or t[-1] - t[0] <= 0:
        return 0.0
    return float(np.polyfit(t, mb, 1)[0] * 60 / mb.mean() * 100)


def slopes(series: Series, warmup_s: float) -> dict[str, Row]:
    """Per process: (MB at the end of warm-up, MB at the end, least-squares slope in % of its size per
    minute, the same over the first and over the second half of the span) after `warmup_s`; processes with
    fewer than 3 samples after it are left out."""
    out = {}
    for name, points in series.items():
        after = [(t, mb) for t, mb in points if t >= warmup_s]
        if len(after) < 3 or after[-1][0] - after[0][0] <= 0:
            continue
        t, mb = np.array(after).T
        early = t <= (t[0] + t[-1]) / 2
        halves = (_pct_per_min(t[early], mb[early]), _pct_per_min(t[~early], mb[~early]))
        out[name] = (float(mb[0]), float(mb[-1]), _pct_per_min(t, mb), *halves)
    return out


def verdict(table: dict[str, Row], max_slope: float) -> list[str]:
    """The processes (of at least MIN_PROCESS_MB) growing faster than `max_slope` %/min in both halves."""
    return [
        f"{name}: {early:+.3f} and {late:+.3f}%/min (first, second half) > {max_slope}%/min"
        for name, (start, _end, _pct, early, late) in sorted(table.items())
        if start >= MIN_PROCESS_MB and min(early, late) > max_slope
    ]


def _sampler(series: Series, stop: threading.Event, period_s: float) -> None:
    t0 = None
    while not stop.wait(period_s):
        if not load_running():
            continue
        now = time.monotonic()
        t0 = t0 if t0 is not None else now
        total = 0.0
        for name, mb in sample().items():
            series[name].append((now - t0, mb))
            total += mb
        series["stack total"].append((now - t0, total))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    loadtest.add_arguments(parser)
    parser.set_defaults(duration="60m", users=4, slo_error_ratio=0.0)
    parser.add_argument(
        "--warmup", type=non_negative_number, default=WARMUP_S, help="seconds not judged (default: 300)"
    )
    parser.add_argument(
        "--sample-s", type=positive_number, default=10.0, help="RSS sampling period in seconds"
    )
    parser.add_argument(
        "--max-slope",
        type=non_negative_number,
        default=MAX_SLOPE_PCT_PER_MIN,
        help="%% of RSS per minute (default: 0.05)",
    )
    parser.add_argument(
        "--memprofile", type=non_negative_number, default=0.0, help="tracemalloc sample period in replicas"
    )


def run(args: argparse.Namespace) -> int:
    args.out = args.out or Path(tempfile.mkdtemp(prefix="avpenet-soak-"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.memprofile > 0:  # read by the replicas at start (they inherit this environment)
        os.environ["AVPENET_MEMPROFILE_S"] = str(args.memprofile)
        os.environ["AVPENET_MEMPROFILE_DIR"] = str(args.out)
        os.environ["AVPENET_MEMPROFILE_BASE_S"] = str(args.warmup)
    series: Series = defaultdict(list)
    stop = threading.Event()
    sampler = threading.Thread(target=_sampler, args=(series, stop, args.sample_s), daemon=True)
    sampler.start()
    try:
        code = loadtest.run(args)
    finally:
        stop.set()
        sampler.join(timeout=args.sample_s + 5)
    write_csv(args.out / "soak_rss.csv", series)
    table = slopes(series, args.warmup)
    if not table:
        print("soak: too short to judge memory (fewer than 3 samples after warm-up)")
        return code or 1
    print(report(table))
    print(memprofile_summary(args.out))
    misses = verdict(table, args.max_slope)
    for miss in misses:
        print(f"FAIL: RSS slope {miss}")
    print(f"RSS series: {args.out / 'soak_rss.csv'}")
    return 1 if misses else code


def write_csv(path: Path, series: Series) -> None:
    with open(path, "w") as fh:
        fh.write("seconds,process,rss_mb\n")
        for name, points in sorted(series.items()):
            fh.writelines(f"{t:.0f},{name},{mb:.1f}\n" for t, mb in points)


def report(table: dict[str, Row]) -> str:
    head = f"{'process':<48}{'MB after warm-up':>18}{'MB at end':>11}{'slope %/min':>13}{'1st half':>10}"
    lines = [head + f"{'2nd half':>10}"]
    for name, (start, end, pct, early, late) in sorted(table.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{name:<48}{start:>18.0f}{end:>11.0f}{pct:>+13.3f}{early:>+10.3f}{late:>+10.3f}")
    return "\n".join(lines)


def memprofile_summary(folder: Path) -> str:
    """Last line of each replica's memprofile: traced MB, gc objects and top growth sites (if any ran)."""
    lines = []
    for path in sorted(folder.glob("memprofile-*.jsonl")):
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        if len(rows) < 2:
            continue
        first, last = rows[0], rows[-1]
        lines.append(
            f"{path.stem}: traced {first['traced_mb']} -> {last['traced_mb']} MB, gc objects "
            f"{first['gc_objects']} -> {last['gc_objects']} over {last['t_s'] - first['t_s']:.0f} s"
        )
        lines.extend(f"    {g['kb']:+.0f} KB ({g['count']:+d}) {g['site']}" for g in last["top_growth"][:5])
    return "\n".join(lines)
