"""`avpenet triton` and the launcher: up on loopback, stops cleanly on SIGTERM, explains a failed start."""

from __future__ import annotations

import ipaddress
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import tritonclient.http as httpclient

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, versions
from ensemble.server import TritonServer, TritonStartError

pytestmark = pytest.mark.integration


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # gRPC listens on "::ffff:127.0.0.1"
    return (mapped or address).is_loopback


READY_LINE = re.compile(r"Triton ready: HTTP (\S+)\s+gRPC (\S+)\s+metrics (\S+)\s+\(pid (\d+)")


def test_cli_serves_every_model_on_loopback_and_stops_on_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "cli",
        "triton",
        "--http-port=0",
        "--grpc-port=0",
        "--metrics-port=0",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        match = None
        assert process.stderr is not None
        while match is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "avpenet triton exited before it was ready"
            match = READY_LINE.search(line)
        assert match is not None
        http_url, grpc_url, _metrics, pid = match.groups()
        assert http_url.startswith("127.0.0.1:") and grpc_url.startswith("127.0.0.1:")
        client = httpclient.InferenceServerClient(http_url)
        assert sorted(m["name"] for m in client.get_model_repository_index()) == sorted(
            m.name for m in contract.MODELS
        )
        assert all(client.is_model_ready(m.name) for m in contract.MODELS)
        triton = psutil.Process(int(pid))
        listening = [c.laddr.ip for c in triton.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        assert len(listening) >= 3 and all(_loopback(ip) for ip in listening), listening
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not psutil.pid_exists(int(pid)) or triton.status() == psutil.STATUS_ZOMBIE
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_failed_start_raises_with_the_log_tail(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_REPOSITORY / contract.FUSION.name, repo / contract.FUSION.name)
    newest = versions.latest(repo / contract.FUSION.name)
    (repo / contract.FUSION.name / str(newest) / "model.onnx").unlink()
    server = TritonServer(repo=repo)
    with pytest.raises(TritonStartError) as info:
        server.start()
    assert "fusion" in str(info.value) and "model.onnx" in str(info.value)
    assert server.pid is None
    assert all(str(repo) not in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))


def test_a_launch_that_cannot_run_leaves_no_temp_dir(tmp_path: Path, monkeypatch) -> None:
    """An OSError from Popen (binary missing, fork refused) skipped the clean-up: one avpenet-triton-* dir
    left in the temp dir per try."""
    import subprocess
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def refused(*_args, **_kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(subprocess, "Popen", refused)
    server = TritonServer(repo=DEFAULT_REPOSITORY)
    with pytest.raises(OSError, match="Cannot allocate memory"):
        server.start()
    assert not list(tmp_path.glob("avpenet-triton-*")) and server.pid is None
