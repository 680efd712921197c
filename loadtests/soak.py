"""`avpenet soak`: the load test held for 10 minutes at a stated rate, with RSS growth of Triton and the
gateway's Ray processes checked (< 10%) on top of the SLOs. Not part of `make test` (ten minutes).
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil

from loadtests import run as loadtest

HELP = "Soak: 10 minutes of mixed locust load; zero errors and < 10% RSS growth of Triton and the gateway."
MAX_RSS_GROWTH = 0.10


def _is_locust(proc: psutil.Process) -> bool:
    try:
        return any("locust" in part for part in proc.cmdline())
    except psutil.Error:
        return False


def stack_rss_mb() -> float:
    """Resident memory of the stack this process started (Triton, its stubs, Ray's raylet and workers).

    The locust load generator (also our child) is left out: its memory is the client's, not the service's.
    """
    total = 0
    children = psutil.Process().children(recursive=True)
    load = {p.pid for p in children if _is_locust(p)}
    for child in children:
        try:
            if child.pid in load or child.ppid() in load:
                continue
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def load_running() -> bool:
    """True while locust runs: RSS is sampled only under load, never during start-up or teardown."""
    return any(_is_locust(p) for p in psutil.Process().children(recursive=True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    loadtest.add_arguments(parser)
    parser.set_defaults(duration="10m", users=4, slo_error_ratio=0.0)


def run(args: argparse.Namespace) -> int:
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:  # RSS every 10 s while the load runs (the first minute is skipped below)
        while not stop.wait(10.0):
            if load_running():
                samples.append((time.monotonic(), stack_rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code = loadtest.run(args)
    finally:
        stop.set()
        sampler.join(timeout=15)
    warm = [mb for _, mb in samples[6:]] or [mb for _, mb in samples]
    if len(warm) < 2:
        print("soak: too short to judge memory growth")
        return code
    growth = (max(warm[-3:]) - warm[0]) / warm[0]
    if args.out:
        with open(args.out / "soak_rss.csv", "w") as fh:
            fh.write("seconds,stack_rss_mb\n")
            fh.writelines(f"{t - samples[0][0]:.0f},{mb:.1f}\n" for t, mb in samples)
    print(f"stack RSS: {warm[0]:.0f} MB after warm-up -> {warm[-1]:.0f} MB at the end ({growth:+.1%})")
    if growth > MAX_RSS_GROWTH:
        print(f"FAIL: RSS grew {growth:.1%} > {MAX_RSS_GROWTH:.0%}")
        return 1
    return code
