"""The tools beside `avpenet`, run as the docs run them: `--help` describes them and runs nothing, and a wrong
argument is one line. k8s/validate.py --help was a traceback (it read '--help/kustomization.yaml'),
ensemble.identity_report --help ran the whole report, and loadtests.gateway_upload_memory --help left out
--rate, --channels and --bits (added after a first parse that had printed the help already)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tool(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["k8s/validate.py"], "usage: k8s/validate.py [-h] dir"),
        (["k8s/render.py"], "usage: k8s/render.py [-h] dir"),
        (["-m", "ensemble.identity_report"], "Takes no options"),
        (["-m", "loadtests.gateway_upload_memory"], "--channels CHANNELS"),
    ],
)
def test_help_describes_the_tool_and_runs_nothing(argv, says):
    done = tool(*argv, "--help")
    assert done.returncode == 0 and says in done.stdout and not done.stderr.strip(), done.stdout + done.stderr
    if "gateway_upload_memory" in argv[-1]:
        assert all(flag in done.stdout for flag in ("--rate RATE", "--channels", "--bits"))


def test_a_folder_without_a_kustomization_is_one_line_and_exit_2(tmp_path):
    for script in ("k8s/validate.py", "k8s/render.py"):
        done = tool(script, str(tmp_path))
        assert done.returncode == 2 and done.stderr.strip() == (
            f"{script}: {tmp_path} holds no kustomization.yaml (e.g. k8s/overlays/gpu)"
        )
    assert tool("-m", "ensemble.identity_report", "--no-such-flag").returncode == 2  # refused, not run
