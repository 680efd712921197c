"""`avpenet serve` as an operator runs it: a hung Triton stub is noticed and healed; signals stop everything.

The command runs as a real subprocess (its own session, like a terminal or systemd would start it) on a copy
of the model repository whose audio_frontend is `hung_stub_model.py`: the real model, except that a marker
request hangs its stub forever. The test checks that readiness turns NOT_SERVING within seconds, that the
supervisor restarts Triton by itself and a control clip scores the same again, and that a signal leaves no
tritonserver, no stub and no temp dir behind. TMPDIR points at a private folder, so "no temp dir" is exact.
The drain test also finds each request's audit line in the command's output after it stopped.
Each test starts a whole stack (~1-2 min here), so they are `slow`: `make reliability` runs them; the quick
watchdog/supervisor fault test on the session stack is test_triton_watchdog.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from hung_triton import hang_triton, hung_repository
from support.gateway import API_KEY, face_track, post_score, readiness, wav_bytes

from ensemble import DEFAULT_REPOSITORY

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 300.0  # Triton + Ray + the deploy on a loaded 2-core box
NOT_READY_S = 20.0  # hung stub -> /readyz 503 and NOT_SERVING (watchdog: 2 probes of 3 s after a 3 s period)
RECOVER_S = 90.0  # -> Triton restarted by the supervisor and the gateway ready again
STOP_S = 60.0  # signal -> every process gone
ORT_SESSION_FILE = ".ses"  # onnxruntime's tiny session-id file in TMPDIR: no media, not ours to remove
# a record of Ray's C++ logging at warning level: "[2026-12-07 22:47:23,383 W 8767 8767] actor_manager.cc:..."
RAY_CPP_WARNING = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ W \d+ \d+\] ")
UPLOADS_IN_FLIGHT = 8  # 60-s clips (58 windows each): still in flight half a second after they were sent


class Serve:
    """`avpenet serve` in its own session; URLs parsed from what it prints."""

    def __init__(self, repo: Path, tmpdir: Path) -> None:
        env = {**os.environ, "TMPDIR": str(tmpdir), "AVPENET_API_KEYS": API_KEY}
        ports = ["--http-port", "0", "--grpc-port", "0"]
        cmd = [sys.executable, "-m", "cli", "serve", "--repo", str(repo), *ports]
        self.log = open(tmpdir.parent / "serve.log", "w+b")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)  # fmt: skip
        self.text = ""
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ctrl-C stops" not in self.output():
            assert self.proc.poll() is None, f"avpenet serve exited:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"avpenet serve not up:\n{self.output()[-3000:]}"
            time.sleep(1.0)
        text = self.output()
        self.http_url = re.search(r"HTTP\s+(http://\S+)/v1/score", text).group(1)
        self.grpc_target = re.search(r"gRPC\s+(127\.0\.0\.1:\d+)\s", text).group(1)
        self.triton_grpc = re.search(r"Triton\s+gRPC\s+(\S+)", text).group(1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stack_processes(self) -> list[psutil.Process]:
        """tritonserver and its stubs started by this serve (they live in their own session)."""
        found = []
        for proc in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if "triton" in proc.name():
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def score(self) -> float:
        wav, npz = wav_bytes(6.0, freq=480.0), face_track(6.0, seed=3).to_npz_bytes()
        files = {"audio": ("a.wav", wav), "landmarks": ("f.npz", npz)}
        reply = post_score(self, files=files, data={"age_group": "adult"})
        assert reply.status_code == 200, reply.text
        return float(reply.json()["score"])

    def signal_and_wait(self, sig: int, group: bool) -> float:
        start = time.monotonic()
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=STOP_S)
        return time.monotonic() - start

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A short private TMPDIR (Ray's socket paths must stay under 107 characters)."""
    root = Path(tempfile.mkdtemp(prefix="avs-"))
    (root / "tmp").mkdir()
    yield root / "tmp"
    shutil.rmtree(root, ignore_errors=True)


def assert_all_gone(procs: list[psutil.Process], tmpdir: Path) -> None:
    _, alive = psutil.wait_procs(procs, timeout=20)  # stubs notice a dead parent within seconds
    assert not alive, f"left running: {[p.pid for p in alive]}"
    left = sorted(p.name for p in tmpdir.iterdir() if p.name != ORT_SESSION_FILE)
    assert not left, f"temp files left: {left}"


@pytest.mark.slow  # ~2.5 min (a whole stack of its own); `make reliability` runs it
def test_hung_stub_is_noticed_and_healed_then_sigterm_to_the_group_stops_everything(tmp_path, private_tmp):
    from grpc_health.v1 import health_pb2

    serve = Serve(hung_repository(tmp_path), private_tmp)
    try:
        before = serve.score()
        assert readiness(serve) == (200, health_pb2.HealthCheckResponse.SERVING)
        first_triton = serve.stack_processes()
        assert len(first_triton) >= 5, "expected tritonserver and its 4 stubs"

        hang_triton(serve.triton_grpc)
        t_hang = time.monotonic()
        while readiness(serve) != (503, health_pb2.HealthCheckResponse.NOT_SERVING):
            assert time.monotonic() - t_hang < NOT_READY_S, "readiness still claims SERVING on a hung stub"
            time.sleep(0.5)
        noticed = time.monotonic() - t_hang

        while readiness(serve)[0] != 200:
            assert time.monotonic() - t_hang < RECOVER_S, f"not recovered:\n{serve.output()[-2000:]}"
            time.sleep(1.0)
        recovered = time.monotonic() - t_hang
        assert "Triton restarted" in serve.output()
        assert np.isclose(serve.score(), before, atol=1e-4), "the control clip scores differently"
        assert all(not p.is_running() for p in first_triton), "the hung Triton was not replaced"
        print(f"hung stub: NOT_SERVING after {noticed:.1f} s, scoring again after {recovered:.1f} s")

        procs = serve.stack_processes()
        took = serve.signal_and_wait(signal.SIGTERM, group=True)
        print(f"SIGTERM to the process group: serve exited in {took:.1f} s (code {serve.proc.returncode})")
        assert "Aborted" not in serve.output()
        assert_all_gone(procs, private_tmp)
    finally:
        serve.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "group"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGKILL, False)],
    ids=["sigint", "sigterm", "sigint-group", "sigkill"],
)
def test_every_signal_stops_triton_and_its_stubs(tmp_path, private_tmp, sig, group):
    """SIGKILL gives no chance to clean up: Triton still dies with its parent (PR_SET_PDEATHSIG); Ray's
    temp dir may then stay (nothing can remove it), so only processes are checked for it."""
    serve = Serve(DEFAULT_REPOSITORY, private_tmp)
    try:
        serve.score()
        procs = serve.stack_processes()
        assert len(procs) >= 5
        serve.signal_and_wait(sig, group)
        if sig == signal.SIGKILL:
            _, alive = psutil.wait_procs(procs, timeout=20)
            assert not alive, f"outlived a killed avpenet serve: {[p.pid for p in alive]}"
            return
        assert_all_gone(procs, private_tmp)
    finally:
        serve.stop()


@pytest.mark.slow
def test_sigterm_to_the_process_alone_answers_the_uploads_in_flight(private_tmp):
    """`docker stop`, systemd and `kill PID` signal this process alone: Ray's processes still serve, so
    `avpenet serve` drains them before it stops. It used to stop Ray at once: six uploads in flight got one
    503 and five lost connections (docs/RELIABILITY.md)."""
    serve = Serve(DEFAULT_REPOSITORY, private_tmp)
    try:
        serve.score()
        wav, answers = wav_bytes(60.0), []

        def upload() -> None:
            try:
                reply = post_score(serve, files={"audio": ("a.wav", wav)}, data={"age_group": "adult"})
                answers.append((reply.status_code, time.monotonic()))
            except requests.RequestException as exc:
                answers.append((type(exc).__name__, time.monotonic()))

        threads = [threading.Thread(target=upload) for _ in range(UPLOADS_IN_FLIGHT)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        procs, signalled = serve.stack_processes(), time.monotonic()
        took = serve.signal_and_wait(signal.SIGTERM, group=False)
        for thread in threads:
            thread.join()
        print(f"SIGTERM to the process with uploads in flight: serve exited in {took:.1f} s")
        assert [status for status, _ in answers] == [200] * UPLOADS_IN_FLIGHT, answers
        # the signal really came with calls in flight (else this proves nothing): some were answered after it
        assert any(at > signalled for _, at in answers), answers
        assert "answering the calls in flight" in serve.output()
        assert_all_gone(procs, private_tmp)
        # the audit trail is in the command's output, where journald or `docker logs` keep it, and so
        # outlives the stop, which removed Ray's temp dir: one line per scoring, the first clip's included
        audited = [line for line in serve.output().splitlines() if '"event": "avpenet.request"' in line]
        outcomes = [json.loads(line[line.index("{") :])["outcome"] for line in audited]
        assert outcomes == ["200"] * (1 + UPLOADS_IN_FLIGHT), audited
        # Ray's autoscaler monitor printed a status block and two INFO lines every 5 s: ray_node.QUIET_RAY_ENV
        assert "Autoscaler status" not in serve.output() and "INFO (monitor)" not in serve.output()
        # ... nor Ray's C++ warnings, its routine (18 records over a start and a stop: ray_node.QUIET_RAY_ENV)
        cpp_warnings = [line for line in serve.output().splitlines() if RAY_CPP_WARNING.match(line)]
        assert not cpp_warnings, cpp_warnings[:5]
        # ... and serve.shutdown(), a "Task ServeController.graceful_shutdown failed" line on every stop
        assert "graceful_shutdown failed" not in serve.output()
    finally:
        serve.stop()
