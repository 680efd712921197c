"""Serve's graceful stop of a Gateway replica closes its ScoringService: Ray's ingress wrapper awaits the
class's `async __del__` after the replica's requests drain, and the service's close waits for Triton calls
still running instead of cancelling them with their channel (preprocess_service/triton_client.py)."""

from __future__ import annotations

import asyncio

import pytest

from preprocess_service.deployments import Gateway


class _Service:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        await asyncio.sleep(0)  # awaited, not merely called
        self.closed = True


class _Streams(_Service):
    """The replica's StreamHub: closing it ends its sweep of expired streams."""


class _Mirror:
    stopped = False

    def stop(self) -> None:
        self.stopped = True


# Python's garbage collector also calls the wrapper's async __del__ and drops the coroutine (Ray's own, as for
# every FastAPI ingress): only Serve's call, awaited, runs it.
@pytest.mark.filterwarnings("ignore:coroutine .*__del__' was never awaited:RuntimeWarning")
def test_serves_destructor_closes_the_service_and_stops_the_metrics_mirror():
    wrapped = Gateway.func_or_class  # what Serve instantiates: Ray's ASGI ingress wrapper around the class
    replica = object.__new__(wrapped)  # no __init__: no Triton, no Ray
    replica.service, replica.metrics_mirror, replica.streams = _Service(), _Mirror(), _Streams()
    asyncio.run(replica.__del__())  # as Serve's replica shutdown calls it
    assert replica.service.closed and replica.metrics_mirror.stopped and replica.streams.closed
