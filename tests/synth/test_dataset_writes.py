"""The files a dataset's later runs read — labels.csv, truth.csv, plan.json, a split.json, the synth run's
progress records, the ones `avpenet calibrate` copies into its new run — are replaced whole: a disk that fills
up mid-write leaves the previous file as it was (half a labels.csv cut at a row reads as a smaller set, half
a split.json as no split), and a progress record cut by an older crash is made again, not a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.full_disk import files, fill_disk_midway

from avpenet import calibrate, data
from avpenet.synth import dataset, progress


def _labels(out: Path, seed: int) -> None:
    dataset.write_labels(out / "labels.csv", dataset.plan(seed, 3, None))


def _truth(out: Path, seed: int) -> None:
    plans = dataset.plan(seed, 3, None)
    for p in plans:
        p.truth = {"voiced_fraction": seed / 10}
    dataset.write_truth(out / "truth.csv", plans)


def _plan(out: Path, seed: int) -> None:
    data.write_plan(out, {"generator": "avpe-synth", "seed": seed, "n_subjects": 3})


def _split(out: Path, seed: int) -> None:
    data.write_split({"train": [f"S{seed}"], "val": [], "test": ["S9"]}, out / data.SPLIT_FILE)


def _run_record(out: Path, seed: int) -> None:
    progress.start(out, {"seed": seed}, resume=False)


def _clip_record(out: Path, seed: int) -> None:
    (out / progress.PROGRESS_DIR / progress.CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    progress.record(out, "S0001_c01", {"voiced_fraction": seed / 10})


def _calibrated_run(out: Path, seed: int) -> None:
    """`avpenet calibrate` copying its source run's split.json into the new run (here `out`)."""
    source = out.parent / f"source-{seed}"
    source.mkdir(exist_ok=True)
    data.write_split({"train": [f"S{seed}"], "val": [], "test": ["S9"]}, source / data.SPLIT_FILE)
    calibrate._keep_record(source, out)


WRITERS: dict[str, Callable[[Path, int], None]] = {
    "labels.csv": _labels, "truth.csv": _truth, "plan.json": _plan, "split.json": _split,
    "progress run.json": _run_record, "progress clip record": _clip_record,
    "calibrate copy": _calibrated_run,
}  # fmt: skip


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_a_write_that_fails_midway_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch, write: Callable[[Path, int], None]
) -> None:
    out = tmp_path / "set"
    out.mkdir()
    write(out, 1)
    before = files(out)
    fill_disk_midway(monkeypatch, out)
    with pytest.raises(OSError, match="No space left"):
        write(out, 2)
    assert files(out) == before  # the previous file, and nothing half-written beside it


def test_a_progress_record_cut_by_a_crash_is_made_again_on_resume(tmp_path: Path) -> None:
    progress.start(tmp_path, {"seed": 1}, resume=False)
    progress.record(tmp_path, "S0001_c01", {"voiced_fraction": 0.5})
    progress.record(tmp_path, "S0001_c02", {"voiced_fraction": 0.25})
    cut = tmp_path / progress.PROGRESS_DIR / progress.CLIPS_DIR / "S0001_c02.json"
    cut.write_text(cut.read_text()[:7])  # what a power loss before the record was synced could leave
    assert progress.start(tmp_path, {"seed": 1}, resume=True) == {"S0001_c01": {"voiced_fraction": 0.5}}
