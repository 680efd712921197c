"""loadtests.stream_gap runs as documented and reports what the state holds after the return (its memory and
time figures are measurements for docs, not assertions)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from avpenet import contract


@pytest.mark.parametrize("lost", ["visual", "audio"])
def test_a_lost_modality_returning_is_measured_and_the_state_stays_bounded(lost):
    from loadtests.stream_gap import measure

    got = measure(minutes=2.0, lost=lost)
    assert got["frames_held"] <= contract.FRAMES_PER_WINDOW + 2 * contract.FPS * 2  # a window + two chunks
    assert got["samples_held"] <= contract.WINDOW_SAMPLES + 2 * contract.SAMPLE_RATE * 2


def test_the_command_prints_its_figures():
    out = subprocess.run([sys.executable, "-m", "loadtests.stream_gap", "--minutes", "0.5"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "visual lost for 0.5 min: its return took" in out.stdout
