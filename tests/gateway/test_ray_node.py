"""The local Ray node (preprocess_service/ray_node.py): objects Ray spills go to RAM, never to its temp dir
on disk; a slow start is tried again; a store that did not fit in /dev/shm is reported.

The integration test fills a real node's object store (in a subprocess: the session's gateway stack may
already hold this process's Ray) and looks for the bytes it put in every file Ray wrote.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.processes import dead_pid

from ensemble import shm_regions
from preprocess_service import ray_node
from preprocess_service.ray_node import RayNode

STORE_BYTES = 80 * 2**20  # Ray's minimum is 75 MiB
OBJECT_BYTES = 30 * 2**20


class _FlakyRay:
    """ray.init that misses the raylet's start-up window `misses` times (Ray's own message), then starts."""

    def __init__(self, misses: int, store_bytes: int = STORE_BYTES) -> None:
        self.misses, self.store_bytes, self.inits, self.shutdowns = misses, store_bytes, 0, 0
        self.calls: list[dict] = []

    def init(self, **kwargs) -> None:
        self.inits += 1
        self.calls.append(kwargs)
        if self.inits <= self.misses:
            raise Exception("The current node timed out during startup. This could happen because ...")

    def shutdown(self) -> None:
        self.shutdowns += 1

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0, "object_store_memory": float(self.store_bytes)}


def test_a_slow_start_is_tried_again_on_a_fresh_temp_dir_with_the_same_spill_dir() -> None:
    fake, node = _FlakyRay(misses=1), RayNode(num_cpus=2)
    try:
        node.start(fake)
        assert (fake.inits, fake.shutdowns) == (2, 1)
        temp_dirs = [call["_temp_dir"] for call in fake.calls]
        assert len(set(temp_dirs)) == 2 and not os.path.exists(temp_dirs[0]) and node.temp_dir == temp_dirs[1]
        spill_dirs = {call["object_spilling_directory"] for call in fake.calls}
        assert spill_dirs == {node.spill_dir} and Path(node.spill_dir).parent == ray_node.SHM_DIR
        assert Path(node.spill_dir).stat().st_mode & 0o077 == 0  # this user's only
    finally:
        made = [call.get(key) for call in fake.calls for key in ("_temp_dir", "object_spilling_directory")]
        node.remove()
    assert not any(os.path.exists(path) for path in made)
    assert (node.temp_dir, node.spill_dir) == (None, None)


class _Broken(_FlakyRay):
    def init(self, **kwargs) -> None:
        super().init(**kwargs)
        raise ValueError("bad argument")


@pytest.mark.parametrize(
    ("make", "error", "inits"),
    [
        (lambda: _FlakyRay(misses=99), "timed out during startup", ray_node.RAY_START_ATTEMPTS),
        (lambda: _Broken(misses=0), "bad argument", 1),
    ],
    ids=["slow every time", "another error"],
)
def test_a_failed_start_is_not_retried_for_ever_and_shuts_what_started(make, error, inits) -> None:
    fake, node = make(), RayNode(num_cpus=2)
    try:
        with pytest.raises(Exception, match=error):
            node.start(fake)
    finally:
        node.remove()
    assert fake.inits == inits
    assert fake.shutdowns == inits  # the last one too: a half-started node must not outlive its folders


def test_a_store_that_does_not_fit_in_shm_is_reported(monkeypatch, caplog) -> None:
    assert ray_node.store_on_disk_warning(2**30, 2**30, "/tmp/x") is None
    told = ray_node.store_on_disk_warning(64 * 2**20, 2**30, "/tmp/x")
    assert told is not None and "1024 MiB" in told and "64 MiB free" in told and "/tmp/x" in told
    assert "--shm-size" in told
    monkeypatch.setattr(ray_node, "shm_free_bytes", lambda: 64 * 2**20)
    node = RayNode(num_cpus=2)
    try:
        with caplog.at_level(logging.WARNING, logger="avpenet.stack"):
            node.start(_FlakyRay(misses=0, store_bytes=2**30))
    finally:
        node.remove()
    assert any("does not fit in /dev/shm" in r.getMessage() for r in caplog.records)


def test_start_removes_the_spill_folders_of_killed_launchers_only(tmp_path, monkeypatch, caplog) -> None:
    """A stack killed with SIGKILL leaves its spill folder (spilled uploads, in RAM) for the next start."""
    scope, prefix = shm_regions._scope(), ray_node.SPILL_PREFIX
    dead = tmp_path / f"{prefix}{scope}_{dead_pid()}_k3x9"
    kept = {
        "running launcher": tmp_path / f"{prefix}{scope}_{os.getpid()}_k3x9",
        "other host or pid namespace": tmp_path / f"{prefix}elsewhere_1_{dead_pid()}_k3x9",
        "unnamed (before launcher tags)": tmp_path / f"{prefix}k3x9",
    }
    for folder in (dead, *kept.values()):
        folder.mkdir()
        (folder / "ray_spilled_objects_1").write_bytes(b"a spilled upload")
    planted = tmp_path / f"{prefix}{scope}_{dead_pid()}_link"  # /dev/shm is writable by all
    planted.symlink_to(kept["running launcher"])
    monkeypatch.setattr(ray_node, "SHM_DIR", tmp_path)
    node = RayNode(num_cpus=2)
    try:
        with caplog.at_level(logging.WARNING, logger="avpenet.stack"):
            node.start(_FlakyRay(misses=0))
        assert not dead.exists() and caplog.records == []  # the symlink skipped, not refused by rmtree
        assert all(folder.is_dir() for folder in kept.values()) and planted.is_symlink()
        own = Path(node.spill_dir)
        assert own.parent == tmp_path and shm_regions.orphaned(own.name, prefix) is False
        assert own.name.startswith(f"{prefix}{scope}_{os.getpid()}_")
    finally:
        node.remove()
    assert ray_node.remove_orphan_spill_dirs(tmp_path) == 0
    another_user = tmp_path / f"{prefix}{scope}_{dead_pid()}_k3x9"
    another_user.mkdir()
    other_uid = os.getuid() + 1
    monkeypatch.setattr(ray_node.os, "getuid", lambda: other_uid)  # as if the folder were theirs
    assert ray_node.remove_orphan_spill_dirs(tmp_path) == 0 and another_user.is_dir()


FILL = textwrap.dedent(
    f"""
    import json, secrets, sys, time
    from pathlib import Path

    import numpy as np
    import ray

    from preprocess_service.ray_node import RayNode

    def holding(root, marker):
        found = []
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink() and marker in path.read_bytes():
                found.append(str(path))
        return found

    marker = secrets.token_bytes(64)  # stands for a patient's recording
    node = RayNode(num_cpus=1, object_store_bytes={STORE_BYTES})
    node.start(ray)
    temp_dir, spill_dir = node.temp_dir, node.spill_dir
    try:
        block = np.frombuffer(marker * ({OBJECT_BYTES} // 64), dtype=np.uint8)
        held = [ray.put(block.copy()) for _ in range(5)]  # 150 MiB held in an 80 MiB store: Ray spills
        deadline = time.monotonic() + 60
        while not holding(spill_dir, marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        report = dict(spilled=len(holding(spill_dir, marker)), on_disk=holding(temp_dir, marker))
        report["read_back"] = all(bytes(ray.get(ref)[:64]) == marker for ref in held)
    finally:
        ray.shutdown()
        node.remove()
    report["left"] = [p for p in (temp_dir, spill_dir) if Path(p).exists()]
    print(json.dumps(report))
    """
)


@pytest.mark.integration
@pytest.mark.skipif(
    ray_node.shm_free_bytes() < 2 * (STORE_BYTES + 5 * OBJECT_BYTES),
    reason="/dev/shm cannot hold the store and its spill (a container's 64 MiB default)",
)
def test_spilled_objects_stay_in_memory_and_go_with_the_node() -> None:
    done = subprocess.run([sys.executable, "-c", FILL], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["on_disk"] == [], report  # nothing Ray wrote under its temp dir holds the bytes
    assert report["spilled"] >= 1, report  # though Ray did spill them: into the RAM folder
    assert report["read_back"] and report["left"] == [], report
