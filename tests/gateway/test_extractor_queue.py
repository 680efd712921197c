"""A FeatureExtractor replica holds the calls the gateways admit and runs `limits.features_threads` of them
at once; the others wait inside it, in order, and one whose caller's deadline passed while it waited is
never decoded. (Why not leave them in Serve's router: preprocess_service/README.md, *Admission*.)
The replica's class is driven directly, with the feature code replaced by a stand-in the tests can hold."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from support.gateway import extractor_replica

from preprocess_service import deployments


@pytest.fixture()
def replica(monkeypatch):
    """A FeatureExtractor replica (its class, without Serve) that runs 2 clips at once."""
    state = {"running": 0, "most": 0, "order": [], "go": threading.Event()}
    state["go"].set()  # cleared by a test that needs the slots held until it says so
    lock = threading.Lock()

    def fake_extract(request, limits, carrier, stop):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            state["order"].append(request)
        state["go"].wait(30)
        time.sleep(0.05)
        with lock:
            state["running"] -= 1
        return f"features of {request}"

    monkeypatch.setattr(deployments, "extract", fake_extract)
    return extractor_replica(features_threads=2), state


def test_at_most_features_threads_clips_run_at_once_and_the_rest_wait_in_order(replica):
    extractor, state = replica

    async def main():
        return await asyncio.gather(*(extractor.extract(f"clip{i}", {}) for i in range(6)))

    assert asyncio.run(main()) == [f"features of clip{i}" for i in range(6)]
    assert state["most"] == 2
    assert state["order"] == [f"clip{i}" for i in range(6)]


def test_a_clip_whose_deadline_passed_while_it_waited_is_not_decoded(replica):
    extractor, state = replica

    async def main():
        state["go"].clear()
        busy = [asyncio.create_task(extractor.extract(f"busy{i}", {})) for i in range(2)]
        await asyncio.sleep(0)  # both slots taken, held until `go`
        asyncio.get_running_loop().call_later(0.1, state["go"].set)
        late = await extractor.extract("late", {}, deadline=time.time() + 0.01)
        await asyncio.gather(*busy)
        return late

    assert asyncio.run(main()) is None
    assert "late" not in state["order"]


def test_a_cancelled_waiting_call_gives_its_turn_to_the_next(replica):
    extractor, state = replica

    async def main():
        state["go"].clear()
        busy = [asyncio.create_task(extractor.extract(f"busy{i}", {})) for i in range(2)]
        gone = asyncio.create_task(extractor.extract("gone", {}))
        await asyncio.sleep(0)  # both slots taken (held until `go`), `gone` waiting for one
        gone.cancel()  # Serve cancels the replica's task when the gateway stops waiting
        state["go"].set()
        nxt = await extractor.extract("next", {})
        await asyncio.gather(*busy, return_exceptions=True)
        return gone, nxt

    gone, nxt = asyncio.run(main())
    assert gone.cancelled() and nxt == "features of next"
    assert "gone" not in state["order"]
