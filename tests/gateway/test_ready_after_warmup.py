"""Readiness only after warm-up: the first request after readiness turns true (what `/readyz` and gRPC
health report: ScoringService.ready) costs at most 1.5x the steady p99 — for a fresh gateway process (as a
new replica is) against a freshly started Triton. The measurement runs in its own interpreter
(ready_probe_driver.py), so nothing is imported or allocated before the replica would have it.

A ratio, not a time. Repeat-tolerant: one first request is a single sample on a shared box, so a second
fresh process is measured when the first misses, and the better ratio counts.

The control shows the bound can fail: fresh processes with the warm-up clip skipped (readiness from Triton and
the watchdog alone) against the same Triton must break it (first request ~2-3x the steady p99 and 4-5x the
median on the 2-core box). Each control run is one more sample: the control passes when any run shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.gateway import face_track, wav_bytes

from ensemble.server import TritonServer

pytestmark = pytest.mark.integration

MAX_RATIO = 1.5
STEADY = 20
ATTEMPTS = 2
CONTROL_ATTEMPTS = 3
DRIVER = Path(__file__).with_name("ready_probe_driver.py")
ROOT = Path(__file__).resolve().parents[2]


def first_over_p99(triton_url: str, wav: Path, npz: Path, cold: bool = False) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mode = ["cold"] if cold else []
    run = subprocess.run(
        [sys.executable, str(DRIVER), triton_url, str(wav), str(npz), str(STEADY), *mode],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return result["first"], float(np.percentile(result["steady"], 99))


def test_first_request_after_ready_is_not_a_cold_one(tmp_path):
    wav, npz = tmp_path / "a.wav", tmp_path / "f.npz"
    wav.write_bytes(wav_bytes(3.5))
    npz.write_bytes(face_track(3.5).to_npz_bytes())
    ratios, control = [], []
    with TritonServer() as triton:  # fresh: its parts have never run
        for _ in range(ATTEMPTS):
            first, p99 = first_over_p99(triton.grpc_url, wav, npz)
            ratios.append(first / p99)
            print(f"first request {first:.3f} s, steady p99 {p99:.3f} s, ratio {ratios[-1]:.2f}")
            if ratios[-1] <= MAX_RATIO:
                break
        for _ in range(CONTROL_ATTEMPTS):
            first, p99 = first_over_p99(triton.grpc_url, wav, npz, cold=True)
            control.append(first / p99)
            print(f"no warm-up: first request {first:.3f} s, steady p99 {p99:.3f} s, ratio {control[-1]:.2f}")
            if control[-1] > MAX_RATIO:
                break
    assert min(ratios) <= MAX_RATIO, f"first request / steady p99 = {ratios}"
    assert max(control) > MAX_RATIO, f"without the warm-up the bound holds too ({control}): it tests nothing"
