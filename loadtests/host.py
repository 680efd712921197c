"""The line every benchmark report starts from: which CPU, how many logical CPUs, which kernel.

Kept apart from bench.py so a measure run on a bare machine (loadtests.device_stage) reads it without the
bench's imports."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
