"""Session fixtures shared by every test folder: ONE real tritonserver (`triton_server`, on the committed
repository) and ONE gateway stack (`gateway_stack`: real Ray Serve in front of that Triton) per session.

Starting Triton costs seconds and hundreds of MB on a 2-core box, so every test that needs it shares this
one (loopback, free ports). Tests that must change the repository or load/unload models start their own
`ensemble.server.TritonServer` on a copy instead, never on this one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from support.gateway import API_KEY, MllpEngine

from ensemble import DEFAULT_REPOSITORY
from ensemble.server import TritonServer


@pytest.fixture(scope="session")
def triton_server() -> Iterator[TritonServer]:
    """The running server; use `.grpc_url` / `.http_url` (host:port for tritonclient) and `.metrics_url`."""
    with TritonServer(repo=DEFAULT_REPOSITORY) as server:
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
def gateway_stack(triton_server, mllp_engine) -> Iterator:
    """Ray Serve running serve_config.yaml against the session's Triton; API keys required (gRPC is on);
    HL7 v2 delivery goes to the loopback MLLP listener `mllp_engine`."""
    from preprocess_service.stack import LocalStack

    args = {
        "limits": {"max_upload_bytes": 4 * 1024 * 1024, "max_duration_s": 20, "max_in_flight": 8},
        # monitoring tests: a small per-key limit and short stall/resume windows they can reach
        "streams": {"max_streams_per_key": 4, "stall_timeout_s": 8, "resume_ttl_s": 30, "max_ahead_s": 15},
        "hl7_mllp_target": mllp_engine.target,
        "hl7_mllp_retries": 1,
    }
    with LocalStack(triton=triton_server, api_keys=[API_KEY], args=args) as stack:
        yield stack
