"""The feature cache `avpenet features` builds and training reads survives a crash or a full disk: a clip
file or manifest that fails mid-write leaves the old one whole, and a clip file cut by an earlier crash is
made again (and decoded afresh by training meanwhile) instead of stopping both with a zip traceback."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from support import testmedia as tm
from support.full_disk import files, fill_disk_midway

from avpenet import contract
from avpenet import data as D
from avpenet.features import cache


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two audio-only clips (no tracker: fast), their cache built."""
    (tmp_path / "audio").mkdir()
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=contract.LABEL_COLUMNS)
        writer.writeheader()
        for i, cid in enumerate(("a", "b")):
            wav = tmp_path / "audio" / f"{cid}.wav"
            wav.write_bytes(tm.audio_bytes(tm.tone(1.0 + i, 16_000), 16_000))
            writer.writerow({
                "clip_id": cid, "subject_id": "s" + cid, "age_group": "adult", "audio": f"audio/{cid}.wav",
                "visual": "", "video": "", "duration_s": 1.0 + i, "score": 5.0, "rater_1": 5, "rater_2": 5,
                "rater_3": 5, "level": "moderate",
            })  # fmt: skip
    assert cache.build_cache(tmp_path, workers=1, progress=False)["extracted"] == 2
    return tmp_path


def _touch(path: Path) -> None:
    """A newer mtime: the clip's cache file is stale and made again."""
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))


@pytest.mark.parametrize("keep", [0, 0.5], ids=["empty", "half"])
def test_a_clip_file_cut_by_a_crash_is_made_again_and_training_decodes_the_clip_meanwhile(
    dataset: Path, keep: float
) -> None:
    path = cache.clip_path(dataset, "a")
    whole = path.read_bytes()
    path.write_bytes(whole[: int(len(whole) * keep)])  # what a power loss before the fsyncs could leave
    row = next(r for r in D.read_labels(dataset) if r["clip_id"] == "a")
    clip = D.load_clip(dataset, row)  # decoded from its WAV, not a zip traceback
    assert clip.inputs[contract.WAVEFORM.name].shape[0] == 1
    manifest = cache.build_cache(dataset, workers=1, progress=False)
    assert manifest["extracted"] == 1 and manifest["skipped_up_to_date"] == 1 and manifest["cached"] == 2
    assert cache.load_cache(dataset)["a"].wave.size == contract.SAMPLE_RATE


def test_a_clip_write_that_fails_midway_leaves_the_old_clip_file_and_no_partial_file(
    dataset: Path, monkeypatch
) -> None:
    before = files(cache.cache_dir(dataset))
    _touch(dataset / "audio" / "a.wav")
    real_savez = np.savez

    def savez_then_enospc(file, *args, **kwargs) -> None:
        buf = io.BytesIO()
        real_savez(buf, *args, **kwargs)
        data = buf.getvalue()
        if isinstance(file, str | os.PathLike):
            Path(file).write_bytes(data[: len(data) // 2])
        else:
            file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        cache.build_cache(dataset, workers=1, progress=False)
    assert files(cache.cache_dir(dataset)) == before  # the old clip file, nothing half-written beside it


def test_a_manifest_write_that_fails_midway_leaves_the_old_manifest(dataset: Path, monkeypatch) -> None:
    manifest = cache.cache_dir(dataset) / "manifest.json"
    before = manifest.read_bytes()
    fill_disk_midway(monkeypatch, dataset)  # a rerun: nothing extracted, only the manifest rewritten
    with pytest.raises(OSError, match="No space left"):
        cache.build_cache(dataset, workers=1, progress=False)
    assert manifest.read_bytes() == before and json.loads(before)["extracted"] == 2
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["clips", "manifest.json"]
