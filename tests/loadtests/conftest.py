"""Fixtures of the load-test tests."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from loadtests import bench


@pytest.fixture
def refused() -> Callable[[float, int, str], bench.Done]:
    """A failed request as the bench records it: answered after `ms` with HTTP `status` and the gateway's
    JSON error body naming `error`."""

    def done(ms: float, status: int, error: str) -> bench.Done:
        body = json.dumps({"error": error, "detail": "x"}).encode()
        return bench.Done(1.0, ms, False, detail=f"HTTP {status}: {body!r}")

    return done
