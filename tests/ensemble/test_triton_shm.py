"""A killed tritonserver leaves its Python backend's shared-memory regions in /dev/shm (RAM, readable by every
local user) holding the last tensors its stubs exchanged, the patient's waveform among them. `stop()` removes
its launch's regions, and `start()` those of launchers in this host and PID namespace that no longer run
(ensemble/shm_regions.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from support.processes import dead_pid

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, shm_regions
from ensemble.client import infer_inputs
from ensemble.onnx_export import valid_inputs
from ensemble.server import TritonServer


def _regions(prefix: str, shm_dir: Path = shm_regions.SHM_DIR) -> list[Path]:
    return sorted(shm_dir.glob(f"{prefix}*"))


@pytest.mark.integration
@pytest.mark.skipif(not shm_regions.SHM_DIR.is_dir(), reason="no /dev/shm: shared memory lives elsewhere")
def test_a_killed_servers_regions_hold_the_waveform_until_stop_removes_them():
    orphan = shm_regions.SHM_DIR / f"{shm_regions.PREFIX}{shm_regions._scope()}_{dead_pid()}_0a1b2c3d_5e9c"
    orphan.write_bytes(b"left by a launcher that was killed")
    arrays = valid_inputs(contract.ENSEMBLE, batch=1, seed=7)
    needle = arrays[contract.AUDIO.name].tobytes()[4000:4064]  # 16 random samples: only where copied
    try:
        with TritonServer(repo=DEFAULT_REPOSITORY) as server:
            assert not orphan.exists(), "start() left a dead launcher's region"
            prefix = server.shm_prefix
            assert prefix and prefix.startswith(shm_regions.PREFIX)
            client = grpcclient.InferenceServerClient(server.grpc_url)
            client.infer(contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, arrays))
            client.close()
            held = _regions(prefix)
            assert held and any(needle in path.read_bytes() for path in held), "the waveform passed elsewhere"
            os.killpg(server.pid, signal.SIGKILL)  # as a crash, the OOM killer or the supervisor's kill
            server._process.wait(timeout=30)
            assert _regions(prefix), "Triton removed its regions itself: nothing left to clean"
    finally:
        orphan.unlink(missing_ok=True)
    assert _regions(prefix) == []


def test_start_removes_only_the_regions_of_launchers_that_no_longer_run(tmp_path):
    scope, dead = shm_regions._scope(), dead_pid()
    names = {
        "dead launcher": f"{shm_regions.PREFIX}{scope}_{dead}_0a1b2c3d_5e9c",
        "running launcher": f"{shm_regions.PREFIX}{scope}_{os.getpid()}_0a1b2c3d_5e9c",
        "other host or pid namespace": f"{shm_regions.PREFIX}elsewhere_1_{dead}_0a1b2c3d_5e9c",
        "a pid the kernel refuses": f"{shm_regions.PREFIX}{scope}_99999999999999999999_0a1b2c3d_5e9c",
        "Triton's default name": "triton_python_backend_shm_region_5e9c",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    planted = tmp_path / f"{shm_regions.PREFIX}{scope}_{dead}_0a1b2c3d_dir"  # /dev/shm is writable by all
    planted.mkdir()
    assert shm_regions.remove_orphans(tmp_path) == 1  # and no error from the folder or the huge pid
    left = {p.name for p in tmp_path.iterdir()}
    assert left == set(names.values()) - {names["dead launcher"]} | {planted.name}
    assert shm_regions.remove(f"{shm_regions.PREFIX}{scope}_{os.getpid()}_", tmp_path) == 1
    assert shm_regions.remove(f"{shm_regions.PREFIX}{scope}_{dead}_", tmp_path) == 0  # a folder: kept
