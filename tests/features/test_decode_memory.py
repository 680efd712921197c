"""What decoding an upload's sound allocates beside the wave it returns, measured with tracemalloc in a fresh
process (this one's allocations and imports do not count). A 48 kHz recording was held as float64 while it
was resampled (`audio.resample`: 6x its 16 kHz result) and, from PyAV, as decoded pieces and their join
(`avaudio.AvAudio`: twice the wave)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from avpenet import contract
from tests.support.testmedia import adts_bytes

ROOT = Path(__file__).resolve().parents[2]
RATE = 48000
PROBE = """
import json, sys, tracemalloc
from pathlib import Path
import numpy as np
from avpenet.features import audio, avaudio
rate, what = int(sys.argv[1]), sys.argv[2]
audio.resample(np.zeros(rate, np.float32), rate)  # soxr loaded, its first allocations made
if what == "resample":
    wave = (0.3 * np.sin(np.arange(60 * rate) * 0.05)).astype(np.float32)
    tracemalloc.start()
    out = audio.resample(wave, rate)
else:
    data = Path(what).read_bytes()
    avaudio.read(data, "aac", 600.0)  # PyAV's decoder set up once
    tracemalloc.start()
    out, _ = avaudio.read(data, "aac", 600.0)
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
    got = _peak("resample")
    assert got["out"] == 60 * contract.SAMPLE_RATE * 4, got
    assert got["peak"] < 1.5 * got["out"], got


def test_a_decoded_aac_track_is_held_once_not_as_pieces_and_their_join(tmp_path):
    """30 s of 48 kHz AAC through PyAV: the wave (5.8 MB) and its spare room; pieces and their join: 2x."""
    t = np.arange(30 * RATE) / RATE
    path = tmp_path / "long.aac"
    path.write_bytes(adts_bytes((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE))
    got = _peak(str(path))
    assert got["out"] >= 30 * RATE * 4, got
    assert got["peak"] < 1.5 * got["out"], got
