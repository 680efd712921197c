"""Shared fixtures. `triton_server`: ONE real tritonserver per test session, on the committed repository.

Starting Triton costs seconds and hundreds of MB on a 2-core box, so every test that needs it shares this
one (loopback, free ports). Tests that must change the repository or load/unload models start their own
`ensemble.server.TritonServer` on a copy instead, never on this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ensemble import DEFAULT_REPOSITORY
from ensemble.server import TritonServer


@pytest.fixture(scope="session")
def triton_server() -> Iterator[TritonServer]:
    """The running server; use `.grpc_url` / `.http_url` (host:port for tritonclient) and `.metrics_url`."""
    with TritonServer(repo=DEFAULT_REPOSITORY) as server:
        yield server
