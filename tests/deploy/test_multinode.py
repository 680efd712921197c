"""The gateway on a Ray cluster of two nodes: a head and a worker started with `ray start` on loopback, each
with its own custom resource; serve_config.yaml (what the RayService deploys) with 2 replicas per deployment
places one of each on each node (Serve spreads replicas), every request through the head's proxy is
answered, and a monitoring stream's resumes reach the Gateway replica holding it. Slow (two raylets and four
replicas on a 2-core box): `make multinode`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from support.gateway import API_KEY, mp4_bytes, wav_bytes

from ensemble import shm_regions
from ensemble.ports import free_ports
from preprocess_service import ray_node

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
DRIVER_TIMEOUT_S = 600.0  # hang guard for deploy + requests on a loaded 2-core box


def _stop_nodes(temp_dir: Path, port: int) -> None:
    """Kill only this test's Ray processes (never `ray stop`, which stops every Ray on the machine): those
    whose command line names its private temp dir or its head's port, and their workers."""
    ours = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        if str(temp_dir) in line or f"127.0.0.1:{port} " in f"{line} ":
            ours.append(proc)
    for proc in ours:
        with contextlib.suppress(psutil.Error):
            ours.extend(proc.children(recursive=True))
    for proc in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def test_replicas_on_two_nodes_all_serving(triton_server, tmp_path):
    temp_dir = Path(tempfile.mkdtemp(prefix="avpenet-ray-"))  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ)
    env.update(
        # More than one node needs this set (Ray otherwise refuses a second raylet), and then Ray turns on
        # token authentication: every node and the driver present the same token, as KubeRay's pods do.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
        AVPENET_API_KEYS=API_KEY,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    )
    port, client_port, http_port = free_ports(3)  # distinct: picked together
    # as the RayService's nodes; named as RayNode names its own, so a killed run's folder is swept
    spill_prefix = f"{ray_node.SPILL_PREFIX}{shm_regions.launcher_tag()}"
    spill_dir = tempfile.mkdtemp(prefix=spill_prefix, dir=ray_node.SHM_DIR)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"]
    common.append(f"--object-spilling-directory={spill_dir}")
    head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}"]
    head += [f"--ray-client-server-port={client_port}", '--resources={"avpenet_node_head": 1}']
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", '--resources={"avpenet_node_worker": 1}']
    (tmp_path / "a.wav").write_bytes(wav_bytes(3.0))
    (tmp_path / "v.mp4").write_bytes(mp4_bytes(3.0))
    clips = tmp_path / "clips.json"
    clips.write_text(json.dumps({"audio": str(tmp_path / "a.wav"), "video": str(tmp_path / "v.mp4")}))
    try:
        for command in (head, worker):
            started = subprocess.run(
                [*command, *common], env=env, capture_output=True, text=True, timeout=180
            )
            assert started.returncode == 0, started.stderr[-3000:]
        driver = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("multinode_driver.py")), f"127.0.0.1:{port}",
             triton_server.grpc_url, str(http_port), API_KEY, str(clips)],
            env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S,
        )  # fmt: skip
        assert driver.returncode == 0, driver.stderr[-3000:]
    finally:
        _stop_nodes(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(spill_dir, ignore_errors=True)
    report = json.loads(driver.stdout.strip().splitlines()[-1])
    by_resource = {r: node for node, resources in report["nodes"].items() for r in resources}
    nodes = {by_resource["avpenet_node_head"], by_resource["avpenet_node_worker"]}
    assert len(nodes) == 2, report["nodes"]
    for deployment in ("Gateway", "FeatureExtractor"):
        assert set(report["placement"][deployment]) == nodes, (deployment, report["placement"])
    assert report["statuses"] and set(report["statuses"]) == {"200"}, report["statuses"]
    # a stream resumed six times through the proxy found its state on whichever node holds it each time
    expected = [{"resumed": True, "media_s": float(i)} for i in range(1, 7)]
    assert report["resumes"] == expected, report["resumes"]
