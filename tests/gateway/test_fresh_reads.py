"""Concurrent requests share Triton repository-index reads, but none is answered by a read older than itself.

The versions reported with a score are read right before and right after the Triton call (pinning.py); a
shared read may only answer a request when it started after the request asked, or a rollout between the
read and the call could be reported as the versions that scored it. A fake read stands in for Triton here.
"""

from __future__ import annotations

import asyncio

import pytest
from support.event_loop import settle

from preprocess_service.pinning import FreshReads


class Reads:
    """A read the test releases by hand; each read returns its own serial number (its start order)."""

    def __init__(self) -> None:
        self.started: list[asyncio.Event] = []
        self.release: list[asyncio.Event] = []
        self.fail: set[int] = set()

    async def __call__(self) -> int:
        serial = len(self.started)
        self.started.append(asyncio.Event())
        self.release.append(asyncio.Event())
        self.started[serial].set()
        await self.release[serial].wait()
        if serial in self.fail:
            raise RuntimeError(f"read {serial} failed")
        return serial


async def read_in_flight(fresh: FreshReads, late: int) -> tuple[asyncio.Task, list[asyncio.Task]]:
    """A first caller whose read 0 is running, then `late` callers that asked after it started."""
    first = asyncio.create_task(fresh.get())
    await settle()
    callers = [asyncio.create_task(fresh.get()) for _ in range(late)]
    await settle()
    return first, callers


def test_callers_that_arrive_during_a_read_share_the_next_one_not_the_running_one():
    async def main() -> None:
        reads = Reads()
        fresh = FreshReads(reads)
        first, late = await read_in_flight(fresh, 5)  # read 0 started before the five
        assert len(reads.started) == 1 and not any(t.done() for t in late)
        reads.release[0].set()
        assert await first == 0
        await settle()
        assert len(reads.started) == 2  # one read for the five late callers, started after read 0 ended
        reads.release[1].set()
        assert await asyncio.gather(*late) == [1] * 5
        assert fresh.reads == 2

    asyncio.run(main())


def test_a_failed_read_fails_only_its_own_callers():
    async def main() -> None:
        reads = Reads()
        reads.fail.add(0)
        fresh = FreshReads(reads)
        first, late = await read_in_flight(fresh, 2)
        reads.release[0].set()
        with pytest.raises(RuntimeError, match="read 0 failed"):
            await first
        await settle()
        reads.release[1].set()
        assert await asyncio.gather(*late) == [1, 1]

    asyncio.run(main())


def test_a_caller_that_gives_up_does_not_cancel_the_read_others_wait_for():
    async def main() -> None:
        reads = Reads()
        fresh = FreshReads(reads)
        first, (quitter, stayer) = await read_in_flight(fresh, 2)
        reads.release[0].set()
        await settle()  # read 1 started for both
        quitter.cancel()
        await settle()
        reads.release[1].set()
        assert (await first, await stayer) == (0, 1)
        assert quitter.cancelled() and fresh.reads == 2

    asyncio.run(main())
