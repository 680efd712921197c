"""What decoding an upload's sound allocates beside the wave it returns, measured with tracemalloc in a fresh
process (this one's allocations and imports do not count). A 48 kHz recording was held as float64 while it
was resampled (`audio.resample`: 6x its 16 kHz result)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from avpenet import contract

ROOT = Path(__file__).resolve().parents[2]
RATE = 48000
PROBE = """
import json, sys, tracemalloc
import numpy as np
from avpenet.features import audio
rate = int(sys.argv[1])
audio.resample(np.zeros(rate, np.float32), rate)  # soxr loaded, its first allocations made
wave = (0.3 * np.sin(np.arange(60 * rate) * 0.05)).astype(np.float32)
tracemalloc.start()
out = audio.resample(wave, rate)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "out": out.nbytes}))
"""


def _peak(*args: str) -> dict:
    """{"peak": traced bytes at the peak, "out": the result's bytes} of the probe run with `args`."""
    cmd = [sys.executable, "-c", PROBE, str(RATE), *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_resampling_a_minute_holds_about_the_result_not_a_float64_wave():
    """60 s at 48 kHz: the 16 kHz result (3.8 MB) and one block; the one-shot call made the whole wave float64
    first (23 MB, 6x the result)."""
    got = _peak()
    assert got["out"] == 60 * contract.SAMPLE_RATE * 4, got
    assert got["peak"] < 1.5 * got["out"], got
