"""loadtests.sdk_upload_memory: the figures in docs/INTEGRATION.md come from a real upload to a stand-in.

Run as the docs run it, in a fresh process: in a long-lived one (the test session) the upload can reuse heap
pages an earlier test freed, and its peak RSS does not rise at all."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("protocol", "at_least"), [("http", 1.0), ("grpc", 2.0)])
def test_measures_one_upload_as_multiples_of_the_file(protocol, at_least):
    cmd = [sys.executable, "-m", "loadtests.sdk_upload_memory", "--protocol", protocol, "--mb", "16"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    found = re.search(r"allocations peak ([\d.]+)x the file, peak RSS \+([\d.]+)x", out)
    assert found, out
    traced, rss = float(found[1]), float(found[2])
    assert at_least - 0.05 <= traced <= at_least + 0.2 and rss > 0.5  # the file, and the serialized request
