"""`avpenet soak`: the load test held for 10 minutes at a stated rate, with RSS growth of Triton and the
gateway's Ray processes checked (< 10%) on top of the SLOs. Not part of `make test` (issue 7).
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil

from loadtests import run as loadtest

HELP = "Soak: 10 minutes of mixed locust load; zero errors and < 10% RSS growth of Triton and the gateway."
MAX_RSS_GROWTH = 0.10


def stack_rss_mb() -> float:
    """Resident memory of every process this one started (Triton, its stubs, Ray's raylet and workers)."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    loadtest.add_arguments(parser)
    parser.set_defaults(duration="10m", users=4, slo_error_ratio=0.0)


def run(args: argparse.Namespace) -> int:
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:  # RSS once the stack is up and warm (first minute skipped), then every 10 s
        while not stop.wait(10.0):
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
    print(f"stack RSS: {warm[0]:.0f} MB after warm-up -> {warm[-1]:.0f} MB at the end ({growth:+.1%})")
    if growth > MAX_RSS_GROWTH:
        print(f"FAIL: RSS grew {growth:.1%} > {MAX_RSS_GROWTH:.0%}")
        return 1
    return code
