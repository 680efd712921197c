"""loadtests.router_queue runs both workers on real Ray Serve and reports each (a smoke run: the figures
themselves are measurements for docs, not assertions)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.integration  # starts a real server
def test_both_ways_of_waiting_are_measured():
    args = ["--calls", "6", "--concurrency", "4", "--work-ms", "20", "--payload-kb", "4", "--rounds", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.router_queue", *args], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = re.findall(
        r"waiting in the (router|replica) +caller CPU +([\d.]+) ms per call +wall +([\d.]+) s", out.stdout
    )
    assert [r[0] for r in rows] == ["router", "replica"]
    assert all(float(wall) > 0 for _, _, wall in rows)
