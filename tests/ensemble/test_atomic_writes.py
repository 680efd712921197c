"""The files `python -m ensemble.tune --write` and `avpenet quantize --json` write are replaced whole: a disk
that fills up mid-write leaves the previous file as it was, not half of the new one for the next run (or the
configs rendered from ensemble/batching.json) to read. No Triton, no ONNX: the sweep and the measurements are
given."""

from __future__ import annotations

import argparse
import errno
import json
import os
import pathlib
from pathlib import Path

import pytest

from avpenet import contract
from ensemble import batching, precision_measure, quantize, tune
from ensemble.publish import replace_text


@pytest.fixture
def disk_fills_midway(monkeypatch, tmp_path: Path) -> None:
    """Every `Path.write_text` under tmp_path writes half its text, then fails as a full disk does."""
    original = pathlib.Path.write_text

    def half_then_enospc(self: Path, data: str, *args, **kwargs) -> int:
        if not Path(self).is_relative_to(tmp_path):
            return original(self, data, *args, **kwargs)
        original(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_enospc)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_tune_write_leaves_the_previous_batching_plan_whole_when_the_disk_fills(
    tmp_path: Path, monkeypatch, disk_fills_midway
) -> None:
    plan_dir = tmp_path / "ensemble"
    plan_dir.mkdir()
    plan_file = plan_dir / batching.PLAN_FILE.name
    plan_file.write_bytes(batching.PLAN_FILE.read_bytes())
    before = _files(plan_dir)
    rows = [{"delay_us": 0, "throughput_rps": 10.0}, {"delay_us": 500, "throughput_rps": 10.0}]
    monkeypatch.setattr(tune, "sweep", lambda *_a: rows)  # no Triton: the sweep's answer is given
    monkeypatch.setattr(tune, "load_plan", lambda: batching.load_plan(plan_file))
    monkeypatch.setattr(tune, "save_plan", lambda plan: batching.save_plan(plan, plan_file))
    with pytest.raises(OSError, match="No space left"):
        tune.main(["--repo", str(tmp_path / "model_repository"), "--write"])
    assert _files(plan_dir) == before  # the plan as it was, and no half-written file beside it
    batching.load_plan(plan_file)  # still parses


def test_quantize_json_leaves_the_previous_report_whole_when_the_disk_fills(
    tmp_path: Path, monkeypatch, disk_fills_midway
) -> None:
    report = tmp_path / "reports" / "int8.json"
    report.parent.mkdir()
    report.write_bytes(b'{"model_stage_ms": {"previous": 1.0}}\n')
    before = _files(report.parent)
    windows = {contract.WAVEFORM.name: [None] * quantize.CALIBRATION_BATCH}
    monkeypatch.setattr(quantize, "calibration_windows", lambda *_a: windows)
    monkeypatch.setattr(precision_measure, "stage_ms", lambda *_a: {"fusion": {"fp32": 1.0, "int8": 0.9}})
    monkeypatch.setattr(precision_measure, "print_report", lambda *_a: None)
    parser = argparse.ArgumentParser()
    quantize.add_arguments(parser)
    argv = ["--data", str(tmp_path), "--repo", str(tmp_path), "--json", str(report), "--measure-only"]
    with pytest.raises(OSError, match="No space left"):
        quantize.run(parser.parse_args(argv))
    assert _files(report.parent) == before
    json.loads(report.read_text())


def test_replace_text_syncs_the_new_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch
) -> None:
    """Without both fsyncs a power loss could leave the renamed-in file empty, or the old one back."""
    path = tmp_path / "plan.json"
    path.write_text("old\n")
    path.chmod(0o640)
    events: list[tuple[str, object]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def recording_replace(src, dst) -> None:
        events.append(("replace", Path(src).stat().st_ino))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    replace_text(path, "new\n")
    assert path.read_text() == "new\n" and path.stat().st_mode & 0o777 == 0o640
    assert events == [("fsync", path.stat().st_ino), ("replace", path.stat().st_ino)] + [
        ("fsync", tmp_path.stat().st_ino)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
