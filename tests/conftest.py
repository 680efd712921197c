"""Session fixtures shared by every test folder: ONE real tritonserver (`triton_server`, on the committed
repository) and ONE gateway stack (`gateway_stack`: real Ray Serve in front of that Triton) per session.

Starting Triton costs seconds and hundreds of MB on a 2-core box, so every test that needs it shares this
one (loopback, free ports). Tests that must change the repository or load/unload models start their own
`ensemble.server.TritonServer` on a copy instead, never on this one.

Both write their temp files into `stack_tmpdir` (TMPDIR of Triton, its stubs and every Ray process), a folder
no other process on the machine uses, so a test can tell exactly what the stack put on disk.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import cpython_ast
from support.gateway import API_KEY, STREAM_KEYS, MllpEngine

from ensemble import DEFAULT_REPOSITORY
from ensemble.server import TritonServer

cpython_ast.serialise_ast_parse()  # before any test runs: CPython 3.11.7's parses race (see the module)


def pytest_configure(config) -> None:
    """One OpenMP thread for PyTorch in the tests and the processes they start, set before any test module
    imports torch. Its default pool (one thread per core) waits at barriers while the tests' own servers hold
    the cores: tests/avpenet/test_model.py and test_train.py took 72-78 s with the default against 25-36 s
    with one thread on the 2-core build box (both orders, another session's tests beside them). A value the
    caller set stays."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def stack_tmpdir() -> Iterator[Path]:
    """The session stack's private TMPDIR (short: Python's multiprocessing puts sockets in it)."""
    folder = Path(tempfile.mkdtemp(prefix="avpenet-stack-tmp-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def triton_server(stack_tmpdir) -> Iterator[TritonServer]:
    """The running server; use `.grpc_url` / `.http_url` (host:port for tritonclient) and `.metrics_url`."""
    with TritonServer(repo=DEFAULT_REPOSITORY, env={"TMPDIR": str(stack_tmpdir)}) as server:
        yield server


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound, so no other process can take it,
    but never listening. (A port merely found free may be taken by another process before the test connects.)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mllp_engine() -> Iterator[MllpEngine]:
    engine = MllpEngine()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def gateway_stack(triton_server, mllp_engine, stack_tmpdir) -> Iterator:
    """Ray Serve running serve_config.yaml against the session's Triton; API keys required (gRPC is on);
    HL7 v2 delivery goes to the loopback MLLP listener `mllp_engine`; TMPDIR `stack_tmpdir` for every Ray
    process (set only while Ray starts them, so this process and other tests' subprocesses keep their own)."""
    from preprocess_service.stack import LocalStack

    args = {
        "limits": {"max_upload_bytes": 4 * 1024 * 1024, "max_duration_s": 20, "max_in_flight": 8},
        # monitoring tests: a small per-key limit and short stall/resume windows they can reach
        "streams": {"max_streams_per_key": 4, "stall_timeout_s": 8, "resume_ttl_s": 30, "max_ahead_s": 15},
        "hl7_mllp_target": mllp_engine.target,
        "hl7_mllp_retries": 1,
    }
    stack = LocalStack(triton=triton_server, api_keys=[API_KEY, *STREAM_KEYS], args=args)
    tempfile.gettempdir()  # cached first: Ray's own session folder stays in the machine's temp dir
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TMPDIR", str(stack_tmpdir))
        stack.start()  # Ray's processes (and the workers its raylet starts later) inherit TMPDIR
    try:
        yield stack
    finally:
        stack.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran against the session's Triton reports that server's last log lines (its crash
    or its stuck model shows there; the CI log is often all there is to read)."""
    report = yield
    server = item.funcargs.get("triton_server") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(server, TritonServer):
        report.sections.append(("session tritonserver: log tail", server.log_tail() or "(empty)"))
    return report
