"""Opt-in memory profile of a gateway process, for the soak: where Python memory grows, if it does.

With `AVPENET_MEMPROFILE_S=N` (and `AVPENET_MEMPROFILE_DIR`) set, the process starts tracemalloc and every N s
appends one JSON line to `<dir>/memprofile-<role>-<pid>.jsonl`: traced Python memory, the gc's object count,
and the top allocation sites by growth since the first sample taken after `AVPENET_MEMPROFILE_BASE_S`
seconds (the end of warm-up). Only code locations and
sizes are written, never request data. Off by default: tracemalloc slows every allocation.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path

PERIOD_ENV = "AVPENET_MEMPROFILE_S"
DIR_ENV = "AVPENET_MEMPROFILE_DIR"
BASE_ENV = "AVPENET_MEMPROFILE_BASE_S"
TOP = 8
_started = False


def start(role: str) -> bool:
    """Start profiling this process as `role` when the environment asks for it; True if started."""
    global _started
    period = float(os.environ.get(PERIOD_ENV) or 0)
    folder = os.environ.get(DIR_ENV)
    if period <= 0 or not folder or _started:
        return False
    _started = True
    tracemalloc.start(1)
    path = Path(folder) / f"memprofile-{role}-{os.getpid()}.jsonl"
    base_s = float(os.environ.get(BASE_ENV) or 0)
    threading.Thread(target=_loop, args=(path, period, base_s), name="memprofile", daemon=True).start()
    return True


def _loop(path: Path, period: float, base_s: float) -> None:
    first: tracemalloc.Snapshot | None = None
    t0 = time.monotonic()
    while True:
        time.sleep(period)
        if first is None and time.monotonic() - t0 < base_s:
            continue  # still warming up
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        first = first or snapshot
        growth = snapshot.compare_to(first, "lineno")[:TOP]
        line = {
            "t_s": round(time.monotonic() - t0, 1),
            "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2),
            "gc_objects": len(gc.get_objects()),
            "top_growth": [
                {"site": str(s.traceback[0]), "kb": round(s.size_diff / 1024, 1), "count": s.count_diff}
                for s in growth
            ],
        }
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
