"""The files `python -m ensemble.tune --write` and `avpenet quantize --json` write are replaced whole: a disk
that fills up mid-write leaves the previous file as it was, not half of the new one for the next run (or the
configs rendered from ensemble/batching.json) to read. No Triton, no ONNX: the sweep and the measurements are
given."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
from support.full_disk import files, fill_disk_midway

from avpenet import contract
from avpenet.durable import replace_text
from ensemble import batching, precision_measure, quantize, tune


def test_tune_write_leaves_the_previous_batching_plan_whole_when_the_disk_fills(
    tmp_path: Path, monkeypatch
) -> None:
    plan_dir = tmp_path / "ensemble"
    plan_dir.mkdir()
    plan_file = plan_dir / batching.PLAN_FILE.name
    plan_file.write_bytes(batching.PLAN_FILE.read_bytes())
    before = files(plan_dir)
    rows = [{"delay_us": 0, "throughput_rps": 10.0}, {"delay_us": 500, "throughput_rps": 10.0}]
    monkeypatch.setattr(tune, "sweep", lambda *_a: rows)  # no Triton: the sweep's answer is given
    monkeypatch.setattr(tune, "load_plan", lambda: batching.load_plan(plan_file))
    monkeypatch.setattr(tune, "save_plan", lambda plan: batching.save_plan(plan, plan_file))
    fill_disk_midway(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="No space left"):
        tune.main(["--repo", str(tmp_path / "model_repository"), "--write"])
    assert files(plan_dir) == before  # the plan as it was, and no half-written file beside it
    batching.load_plan(plan_file)  # still parses


def test_quantize_json_leaves_the_previous_report_whole_when_the_disk_fills(
    tmp_path: Path, monkeypatch
) -> None:
    report = tmp_path / "reports" / "int8.json"
    report.parent.mkdir()
    report.write_bytes(b'{"model_stage_ms": {"previous": 1.0}}\n')
    before = files(report.parent)
    windows = {contract.WAVEFORM.name: [None] * quantize.CALIBRATION_BATCH}
    monkeypatch.setattr(quantize, "calibration_windows", lambda *_a: windows)
    monkeypatch.setattr(precision_measure, "stage_ms", lambda *_a: {"fusion": {"fp32": 1.0, "int8": 0.9}})
    monkeypatch.setattr(precision_measure, "print_report", lambda *_a: None)
    parser = argparse.ArgumentParser()
    quantize.add_arguments(parser)
    argv = ["--data", str(tmp_path), "--repo", str(tmp_path), "--json", str(report), "--measure-only"]
    fill_disk_midway(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="No space left"):
        quantize.run(parser.parse_args(argv))
    assert files(report.parent) == before
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


def test_two_writers_of_one_file_stage_it_apart(tmp_path: Path) -> None:
    """Two `avpenet features` runs on one dataset write the same clip file (in containers, maybe as the same
    pid): with one staged name, the first to swap it in could publish the other's half-written bytes."""
    from avpenet.durable import stage

    path = tmp_path / "clip.npz"
    first, second = stage(path, b"one"), stage(path, b"two")
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(".clip.npz.") and (first.read_bytes(), second.read_bytes()) == (
        b"one",
        b"two",
    )


def test_a_link_is_written_through_and_a_pipe_is_written_to_not_replaced(tmp_path: Path) -> None:
    """`avpenet evaluate --json` through a link replaced the link with a file (its target kept the old
    report); to /dev/stdout it would have put a regular file in /dev. (A named pipe stands in, as /dev/stdout
    is when piped: any user may make one, where a device node needs root.)"""
    import stat
    import threading

    target, link = tmp_path / "report.json", tmp_path / "latest.json"
    target.write_text("old")
    link.symlink_to(target)
    replace_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(pipe.read_bytes()), daemon=True)
    reader.start()
    replace_text(pipe, "written through")
    reader.join(10)
    assert stat.S_ISFIFO(pipe.stat().st_mode) and read == [b"written through"]


def test_a_staged_file_left_by_a_crash_is_swept_by_a_later_write_once_stale(tmp_path: Path) -> None:
    """A writer killed between staging and swapping leaves `.<name>.<token>.new`; a feature cache or a
    checkpoint folder rewritten after many crashes kept every one. Only stale ones are removed: a writer at
    work now has just written its own."""
    from avpenet.durable import STALE_STAGED_S, staged_name

    target = tmp_path / "split.json"
    stale, fresh = staged_name(target), staged_name(target)
    other = tmp_path / ".split.json.not-a-token.new"  # not this module's name: someone else's file
    for leftover in (stale, fresh, other):
        leftover.write_text("half")
    old = os.stat(stale).st_mtime - STALE_STAGED_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    replace_text(target, "{}")
    assert target.read_text() == "{}"
    assert not stale.exists() and fresh.exists() and other.exists()
