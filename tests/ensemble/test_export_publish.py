"""Publishing into the model repository: all parts or none on a disk error, a version number never names two
models (rollback), one writer at a time, and an export without --checkpoint never publishes the reference
over a trained run.

The ONNX export itself is replaced by stand-in bytes (not comparable as ONNX, so every part changes): these
tests are about what lands on disk, test_ensemble_versions.py and test_version_identity.py export for real."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.digests import repository_snapshot

from avpenet import contract
from cli.main import main
from ensemble import DEFAULT_REPOSITORY, PROJECT_ROOT, configs, export, quantize, repository_lock, versions

SECOND = contract.PARTS[1]  # the part whose publishing fails: the first is already written by then
HIDDEN = (".staging-", ".retired-", ".new", ".old")
LOCK = repository_lock.LOCK_NAME


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    copy = tmp_path / "model_repository"
    shutil.copytree(DEFAULT_REPOSITORY, copy)
    return copy


@pytest.fixture
def retrained(monkeypatch):
    """A model whose four parts all differ from what the repository serves; `tag` changes them again."""
    state = {"tag": b"retrained"}
    monkeypatch.setattr(export, "export_part", lambda _m, spec: (state["tag"] + spec.name.encode(), 0.0))
    monkeypatch.setattr(export, "fp32_dft_frontend", lambda: (state["tag"] + b" fp32-DFT graph", 0.0))
    return SimpleNamespace(part=lambda name: None, state=state)


def _fail(monkeypatch, method: str, when) -> None:
    original = getattr(pathlib.Path, method)

    def failing(self, *args, **kwargs):
        if when(Path(self), *args):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, method, failing)


def _failures(second: str) -> dict[str, tuple]:
    """Where a disk error strikes, each after the first part (`second`: the one after it) was written."""
    return {
        "writing the second part": ("write_bytes", lambda p, *_: p.parent.parent.name == second),
        "renaming the second part into place": (
            "rename",
            lambda p, target: Path(target).parent.name == second,
        ),
        "writing the ensemble's record": (
            "write_text",
            lambda p, *_: p.parent.parent.name == contract.ENSEMBLE.name and "manifest" in p.name,
        ),
    }


FAILURES = _failures(SECOND.name)


@pytest.mark.parametrize("where", FAILURES)
def test_a_disk_error_while_publishing_leaves_the_repository_byte_for_byte(
    where: str, repo: Path, retrained, monkeypatch
) -> None:
    """The first part used to stay at N+1 (its N-1 already pruned) beside the others at N."""
    before = repository_snapshot(repo)
    _fail(monkeypatch, *FAILURES[where])
    with pytest.raises(OSError, match="No space left"):
        export.export_repository(retrained, repo, {"kind": "test"})
    assert repository_snapshot(repo) == before


@pytest.fixture
def quantizing(monkeypatch) -> None:
    """`avpenet quantize` with its fp32 chain and ONNX Runtime's quantiser replaced by stand-in bytes."""
    monkeypatch.setattr(quantize, "OrtChain", lambda *_a, **_k: SimpleNamespace(all_tensors=lambda _t: {}))
    monkeypatch.setattr(quantize, "quantize_part", lambda _fp32, spec, _v: b"int8 of " + spec.name.encode())
    monkeypatch.setattr(quantize, "_max_diff", lambda *_args: 0.0)


@pytest.mark.parametrize("where", FAILURES)
def test_a_disk_error_while_quantizing_leaves_the_repository_byte_for_byte(
    where: str, repo: Path, quantizing, monkeypatch
) -> None:
    """Quantize published part by part: its first part stayed at N+1 (N-1 pruned) beside the others."""
    before = repository_snapshot(repo)
    _fail(monkeypatch, *_failures(quantize.QUANTISABLE[1])[where])
    with pytest.raises(OSError, match="No space left"):
        quantize.quantize_repository(repo, {}, quantize.QUANTISABLE, calibration={"windows": 0})
    assert repository_snapshot(repo) == before


def test_a_published_quantisation_records_every_new_version_as_served(repo: Path, quantizing) -> None:
    newest = {p: versions.latest(repo / p) for p in quantize.QUANTISABLE}
    report = quantize.quantize_repository(repo, {}, quantize.QUANTISABLE, calibration={"windows": 0})
    record = json.loads((repo / contract.ENSEMBLE.name / "1" / versions.MANIFEST).read_text())
    for part in quantize.QUANTISABLE:
        assert report[part]["version"] == newest[part] + 1 == record["steps_served"][part]
        assert report[part]["quantized_from_version"] == newest[part]
        assert report[part]["pruned"] == [newest[part] - 1]
    assert not [p for p in repo.rglob("*") if any(mark in p.name for mark in HIDDEN)]


def test_a_published_export_moves_every_part_and_leaves_nothing_hidden(repo: Path, retrained) -> None:
    newest = {p.name: versions.latest(repo / p.name) for p in contract.PARTS}
    report = export.export_repository(retrained, repo, {"kind": "test"}, keep=2)
    for part in contract.PARTS:
        folder = repo / part.name
        assert versions.versions(folder) == [newest[part.name], newest[part.name] + 1]
        assert report[part.name]["pruned"] == [newest[part.name] - 1]
        assert versions.highest_used(folder) == newest[part.name] + 1
    assert not [p for p in repo.rglob("*") if any(mark in p.name for mark in HIDDEN)]


def test_a_version_number_is_never_reused_after_a_rollback(repo: Path, retrained) -> None:
    """A client pinned to N+1 of the rolled-back model used to get the next export's model under N+1."""
    fusion = repo / contract.FUSION.name
    served = versions.latest(fusion)
    rolled_back = export.export_repository(retrained, repo, {"kind": "test"})[contract.FUSION.name]["version"]
    assert rolled_back == served + 1
    shutil.rmtree(fusion / str(rolled_back))  # the rollback of ensemble/README.md
    assert configs.main(["--repo", str(repo)]) == 0

    retrained.state["tag"] = b"retrained again"
    report = export.export_repository(retrained, repo, {"kind": "test"})

    assert report[contract.FUSION.name]["version"] == rolled_back + 1
    manifest = versions.read_manifest(fusion, rolled_back + 1)
    assert manifest["previous_version"] == served
    assert (
        json.loads((repo / contract.ENSEMBLE.name / "1" / versions.MANIFEST).read_text())["steps_served"][
            contract.FUSION.name
        ]
        == rolled_back + 1
    )


def test_every_file_is_on_disk_before_its_rename_and_every_rename_before_the_end(
    repo: Path, retrained, monkeypatch
) -> None:
    """Nothing was fsynced: after a power loss a renamed-in config or manifest could be empty (its rename
    reached the disk, its bytes had not), or a rename be lost while the old version was already deleted."""
    events: list[tuple[str, object]] = []  # ("fsync", inode) or ("rename", target), in the order they ran
    fsync, replace, rename = os.fsync, os.replace, pathlib.Path.rename

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def recording_replace(source, target) -> None:
        replace(source, target)
        events.append(("rename", Path(target)))

    def recording_rename(self: Path, target) -> Path:
        moved = rename(self, target)
        events.append(("rename", Path(target)))
        return moved

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(pathlib.Path, "rename", recording_rename)
    export.export_repository(retrained, repo, {"kind": "test"})

    renames = [(i, target) for i, (kind, target) in enumerate(events) if kind == "rename"]
    published = [(i, t) for i, t in renames if t.exists()]  # versions retired (moved aside) are deleted now
    assert len(published) > len(contract.PARTS)  # the parts' new versions, their records, the configs
    for i, target in published:
        contents = [target, *target.rglob("*")] if target.is_dir() else [target]
        unsynced = [p for p in contents if ("fsync", p.stat().st_ino) not in events[:i]]
        assert not unsynced, f"{target} renamed into place before {unsynced} reached the disk"
    last = renames[-1][0]
    for folder in {target.parent for _, target in renames}:
        assert ("fsync", folder.stat().st_ino) in events[last:], f"{folder}: its renames never synced"


def test_an_undone_publication_is_on_disk_before_the_lock_is_released(
    repo: Path, retrained, monkeypatch
) -> None:
    """The undo's renames back and removals were never fsynced: after a crash during or after a failed
    export, the repository could come back half undone (a part at N+1 beside the others at N)."""
    events: list[tuple[str, object]] = []  # ("fsync", inode) or ("changed", folder) once the export failed
    failed: list[Path] = []
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def record_after_failure(owner: object, name: str, folders) -> None:
        original = getattr(owner, name)

        def recorded(*args, **kwargs):
            result = original(*args, **kwargs)
            events.extend(("changed", folder) for folder in (folders(*args) if failed else []))
            return result

        monkeypatch.setattr(owner, name, recorded)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    record_after_failure(os, "replace", lambda source, target: [Path(target).parent])
    record_after_failure(pathlib.Path, "rename", lambda path, target: [path.parent, Path(target).parent])
    record_after_failure(pathlib.Path, "rmdir", lambda path: [path.parent])
    record_after_failure(pathlib.Path, "unlink", lambda path, *_: [path.parent])
    record_after_failure(shutil, "rmtree", lambda path, *_, **__: [Path(path).parent])
    where, when = FAILURES["writing the ensemble's record"]  # the parts are renamed into place by then

    def failing(path: Path, *args) -> bool:
        if not when(path, *args):
            return False
        failed.append(path)  # what runs from here on is the undo
        return True

    _fail(monkeypatch, where, failing)
    with pytest.raises(OSError, match="No space left"):
        export.export_repository(retrained, repo, {"kind": "test"})

    changes = [(i, folder) for i, (kind, folder) in enumerate(events) if kind == "changed"]
    assert {folder.name for _, folder in changes} >= {p.name for p in contract.PARTS}  # parts renamed back
    last = changes[-1][0]
    for folder in {folder for _, folder in changes if folder.exists()}:
        assert ("fsync", folder.stat().st_ino) in events[last:], f"{folder}: its undo never reached the disk"


def test_add_version_numbers_above_a_deleted_newest_version(tmp_path: Path) -> None:
    folder = tmp_path / "part"
    assert versions.add_version(folder, {"model.onnx": b"a"}, {}) == (1, True)
    assert versions.add_version(folder, {"model.onnx": b"b"}, {}) == (2, True)
    shutil.rmtree(folder / "2")
    assert versions.add_version(folder, {"model.onnx": b"c"}, {}) == (3, True)
    assert versions.versions(folder) == [1, 3]


@pytest.mark.parametrize("damaged", ["<<<<<<< HEAD\n", '{"version": 3}', '{"highest_version": null}'])
def test_a_damaged_high_water_record_is_refused_with_its_file_named(tmp_path: Path, damaged: str) -> None:
    folder = tmp_path / "part"
    versions.add_version(folder, {"model.onnx": b"a"}, {})
    (folder / versions.HIGH_WATER).write_text(damaged)
    with pytest.raises(ValueError, match="is not a high-water record.*restore it"):
        versions.add_version(folder, {"model.onnx": b"b"}, {})


def test_the_committed_repository_records_its_highest_versions() -> None:
    """Without the record a rollback of a committed part would hand its number to the next export."""
    for part in contract.PARTS:
        record = json.loads((DEFAULT_REPOSITORY / part.name / versions.HIGH_WATER).read_text())
        assert record["highest_version"] >= versions.latest(DEFAULT_REPOSITORY / part.name)


def _record_source(repo: Path, part: contract.ModelSpec, source: dict) -> None:
    folder = repo / part.name
    path = folder / str(versions.latest(folder)) / versions.MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), "source": source}))


def test_export_without_checkpoint_refuses_a_repository_from_a_trained_run(
    repo: Path, monkeypatch, capsys
) -> None:
    """It used to publish the bundled reference over the run's fusion when a configs-only export was meant."""
    _record_source(repo, contract.FUSION, {"kind": "checkpoint", "run_dir": "runs/hospital-v1"})
    before = repository_snapshot(repo)

    def publish(*_args, **_kwargs):
        raise AssertionError("published the reference over a trained run")

    monkeypatch.setattr(export, "export_repository", publish)
    assert main(["export", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "fusion" in err and "runs/hospital-v1" in err
    assert "python -m ensemble.configs" in err and "--checkpoint" in err
    assert repository_snapshot(repo) == before


def test_export_without_checkpoint_still_publishes_over_the_reference(repo: Path, monkeypatch) -> None:
    reference = export.load_source(None)[1]  # also as `--checkpoint avpenet/reference` recorded it
    _record_source(repo, contract.FUSION, {**reference, "kind": "checkpoint"})
    published = []
    monkeypatch.setattr(export, "export_repository", lambda *args: published.append(args) or {})
    assert main(["export", "--repo", str(repo)]) == 0
    assert len(published) == 1 and published[0][2]["kind"] == "reference"


def test_a_second_export_is_refused_while_the_first_decides_its_versions(
    repo: Path, retrained, monkeypatch
) -> None:
    """Two exports at once both read highest_version N and both published N+1: one replaced the other."""
    deciding, resume, first = threading.Event(), threading.Event(), []
    highest_used = versions.highest_used

    def pausing(model_dir: Path) -> int:
        if threading.current_thread().name == "first export" and not deciding.is_set():
            deciding.set()  # the first export has read a high-water mark and not yet written its version
            assert resume.wait(60)
        return highest_used(model_dir)

    monkeypatch.setattr(versions, "highest_used", pausing)
    newest = versions.latest(repo / contract.FUSION.name)
    thread = threading.Thread(
        target=lambda: first.append(export.export_repository(retrained, repo, {"kind": "first"})),
        name="first export",
    )
    thread.start()
    try:
        assert deciding.wait(60)
        before = repository_snapshot(repo)
        with pytest.raises(
            OSError, match=rf"being written by pid {os.getpid()} .*{LOCK}.*nothing was written"
        ):
            export.export_repository(retrained, repo, {"kind": "second"})
        assert repository_snapshot(repo) == before
    finally:
        resume.set()
        thread.join(60)
    retrained.state["tag"] = b"retrained again"
    second = export.export_repository(retrained, repo, {"kind": "second"})
    fusion = repo / contract.FUSION.name
    assert [first[0][contract.FUSION.name]["version"], second[contract.FUSION.name]["version"]] == [
        newest + 1,
        newest + 2,
    ]
    assert (fusion / str(newest + 1) / "model.onnx").read_bytes() == b"retrainedfusion"
    assert versions.read_manifest(fusion, newest + 1)["source"] == {"kind": "first"}
    assert (fusion / str(newest + 2) / "model.onnx").read_bytes() == b"retrained againfusion"


_HOLDER = """import sys
from ensemble.repository_lock import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_elsewhere(repo: Path) -> Iterator[int]:
    """`repo`'s lock held by another process for the block; yields that process's pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(repo)], cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(60)


def test_a_writer_in_another_process_holds_off_every_writer(
    repo: Path, quantizing, monkeypatch, capsys
) -> None:
    """`python -m ensemble.configs`, `avpenet quantize` and `avpenet export` while another process publishes:
    refused at once,
    naming the lock and that process's pid (exit 2 and one line from the CLI), and nothing written."""
    monkeypatch.setattr(export, "export_repository", lambda *_a: pytest.fail("exported under another's lock"))
    (repo / "fusion" / "config.pbtxt").write_text("# a stale config the configs run would rewrite\n")
    before = repository_snapshot(repo)
    with held_elsewhere(repo) as pid:
        with pytest.raises(OSError, match=rf"being written by pid {pid} .*holds {repo / LOCK}"):
            configs.main(["--repo", str(repo)])
        cli = [sys.executable, "-m", "ensemble.configs", "--repo", str(repo)]  # as an SRE runs it
        run = subprocess.run(cli, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert run.stderr.startswith("python -m ensemble.configs: ") and f"pid {pid}" in run.stderr
        with pytest.raises(OSError, match=rf"being written by pid {pid} "):
            quantize.quantize_repository(repo, {}, quantize.QUANTISABLE, calibration={"windows": 0})
        assert main(["export", "--repo", str(repo)]) == 2
        err = capsys.readouterr().err
        assert f"pid {pid}" in err and LOCK in err and len(err.strip().splitlines()) == 1
    assert repository_snapshot(repo) == before
    assert configs.main(["--repo", str(repo)]) == 0  # the lock went with its holder


def test_tune_writes_its_batching_plan_only_under_the_repository_lock(repo: Path, monkeypatch) -> None:
    """`python -m ensemble.tune --write` rewrote ensemble/batching.json before its configs took the lock, so a
    tune beside another writer changed the plan and then failed; now it is refused before writing either."""
    from ensemble import tune

    rows = [{"delay_us": 0, "throughput_rps": 10.0}, {"delay_us": 500, "throughput_rps": 10.0}]
    monkeypatch.setattr(tune, "sweep", lambda *_a: rows)  # no Triton: the sweep's answer is given
    saved = []
    monkeypatch.setattr(tune, "save_plan", saved.append)
    with held_elsewhere(repo) as pid, pytest.raises(OSError, match=rf"being written by pid {pid} "):
        tune.main(["--repo", str(repo), "--write"])
    assert not saved
