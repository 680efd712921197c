"""Which machine made a figure: the CPU, the vector instructions its kernels pick, the libraries that ran.

Why it is recorded: the same render, tracked and scored on another CPU, reads a little differently
(mediapipe's and PyTorch's kernels choose AVX2, AVX-512 or VNNI code paths, and those round differently:
the test part rendered on an AMD EPYC without AVX-512 read 1.2% lower MAE than on an Intel Xeon with it,
docs/EVALUATION.md).
So each rendered clip's tracking stamp names the machine that rendered and tracked it (features/tracked.py),
and `avpenet evaluate` reports which machines made the tracks it scored, beside the one it ran on.
"""

from __future__ import annotations

import functools
import platform
from collections import Counter
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

# CPU flags that change which kernels the float work runs (and so its last bits), in the order reported.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
TRACKING_PACKAGES = ("mediapipe", "opencv-python-headless")  # render (cv2 warps) and tracking
SCORING_PACKAGES = ("torch", "onnxruntime")


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; the platform's name and no flags elsewhere."""
    name, flags = "", set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), flags


def cpu_name() -> str:
    return _cpuinfo()[0]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache  # fixed for the process: read once, not per clip tracked or stamped
def describe(packages: tuple[str, ...] = ()) -> str:
    """One line, e.g. 'AMD EPYC [avx2 fma]; mediapipe 1.2.3, ...': the CPU, its VECTOR_FLAGS, the packages."""
    name, flags = _cpuinfo()
    vector = " ".join(f for f in VECTOR_FLAGS if f in flags) or "no listed vector flags"
    line = f"{name} [{vector}]"
    if packages:
        line += "; " + ", ".join(f"{p} {_version(p)}" for p in packages)
    return line


def count(machines: Iterable[str]) -> dict[str, int]:
    """{machine: clips}, the most clips first."""
    return dict(Counter(machines).most_common())


def per_machine(counts: dict[str, int]) -> str:
    """'M1: 310 clips; M2: 3 clips' for a {machine: clips} count (features and evaluate print it)."""
    return "; ".join(f"{m}: {n} clip{'s' if n != 1 else ''}" for m, n in counts.items()) or "none"
