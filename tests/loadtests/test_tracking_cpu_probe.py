"""loadtests.tracking_cpu: the video path's feature CPU, measured both ways on a real clip; the same track."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from avpenet.features import landmarker_arrays
from loadtests import tracking_cpu


def test_reports_both_reads_and_that_they_agree(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert tracking_cpu.main(["--rounds", "1", "--clips", "1"]) == 0
    assert not list(tmp_path.iterdir())  # its clip is removed (before: one MP4 left in /tmp per run)
    out = capsys.readouterr().out
    objects, arrays = map(float, re.search(r"Python objects ([\d.]+), arrays ([\d.]+) ms", out).groups())
    assert objects > 0 and arrays > 0
    assert "the same track both ways: True" in out
    assert landmarker_arrays.FAST  # the probe leaves the served setting as it found it


def test_refuses_an_empty_run() -> None:
    with pytest.raises(SystemExit) as exc:
        tracking_cpu.main(["--rounds", "0"])
    assert exc.value.code == 2
