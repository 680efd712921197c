"""The allocator check behind the soak's fix: RSS of one process tracking the same video over and over on
worker threads, as the FeatureExtractor replica does (`asyncio.to_thread`, landmarkers from `tracker.pooled`).

    .venv/bin/python -m loadtests.arenas --rounds 60                      # glibc's default arenas
    MALLOC_ARENA_MAX=2 .venv/bin/python -m loadtests.arenas --rounds 60   # what the stack ships
    .venv/bin/python -m loadtests.arenas --rounds 60 --trim               # malloc_trim(0) after each clip

Each round tracks the clip on two threads of an 8-thread pool; RSS is printed every 10 rounds. A leak in
the tracker would grow under every variant; growth only with per-thread arenas is the allocator keeping
freed pages (docs/RELIABILITY.md, Soak). Reads a bundled example clip; writes nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from avpenet.argtypes import positive_int

CLIP = Path(__file__).resolve().parents[1] / "examples" / "neonate-cry-high.mp4"


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=60)
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after each clip")
    parser.add_argument("--clip", type=Path, default=CLIP)
    args = parser.parse_args(argv)
    from avpenet.features import tracker

    data = args.clip.read_bytes()
    libc = ctypes.CDLL("libc.so.6")

    def one(_: int) -> None:
        tracker.track_video(data)
        if args.trim:
            libc.malloc_trim(0)

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        for i in range(args.rounds):
            list(pool.map(one, range(2)))
            if i % 10 == 0 or i == args.rounds - 1:
                print(f"round {i:4d}  {time.monotonic() - t0:6.0f} s  RSS {rss_mb():6.0f} MB", flush=True)


if __name__ == "__main__":
    main()
