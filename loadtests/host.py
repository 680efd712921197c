"""The line every benchmark report starts from: which CPU, how many logical CPUs, which kernel.

Kept apart from bench.py so a measure run on a bare machine (loadtests.device_stage) reads it without the
bench's imports."""

from __future__ import annotations

import os
import platform

from avpenet.machine import cpu_name


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
