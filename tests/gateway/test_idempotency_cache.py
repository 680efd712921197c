"""Unit tests of the per-replica Idempotency-Key cache."""

from __future__ import annotations

import asyncio
import re

import pytest
from support.event_loop import settle

from preprocess_service import idempotency
from preprocess_service.budget import RequestBudget
from preprocess_service.errors import InvalidRequest, Overloaded, StillRunning, reason_of, status_of
from preprocess_service.limits import InFlightLimiter


class _FirstRequest:
    """Work that runs until released, counting its runs: the first request a retry waits on. It answers
    `answer`, or how many times it ran."""

    def __init__(self, answer: object = None, released: bool = False) -> None:
        self.started, self.release, self.calls, self.answer = asyncio.Event(), asyncio.Event(), 0, answer
        if released:
            self.release.set()

    async def __call__(self) -> object:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return self.calls if self.answer is None else self.answer


def test_same_key_same_request_runs_once_and_replays():
    async def run():
        cache = idempotency.IdempotencyCache(ttl_s=60, max_entries=10)
        calls = []

        async def work():
            calls.append(1)
            await asyncio.sleep(0.01)
            return {"n": len(calls)}

        first, second = await asyncio.gather(
            cache.run("k1", "key-a", "fp", work), cache.run("k1", "key-a", "fp", work)
        )  # concurrent: the second waits for the first
        third = await cache.run("k1", "key-a", "fp", work)
        other_scope = await cache.run("k2", "key-a", "fp", work)  # another API key: its own namespace
        no_key = await cache.run("k1", None, "fp", work)
        return calls, first, second, third, other_scope, no_key

    calls, first, second, third, other_scope, no_key = asyncio.run(run())
    assert first == ({"n": 1}, False) and second == ({"n": 1}, True) and third == ({"n": 1}, True)
    assert other_scope == ({"n": 2}, False) and no_key == ({"n": 3}, False) and len(calls) == 3


def test_different_request_with_same_key_is_refused_and_failures_are_not_stored():
    async def run():
        cache = idempotency.IdempotencyCache()
        attempts = []

        async def flaky():
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("triton down")
            return "ok"

        with pytest.raises(RuntimeError):
            await cache.run("k", "key", "fp", flaky)
        answer = await cache.run("k", "key", "fp", flaky)
        with pytest.raises(idempotency.IdempotencyMismatch, match="different request"):
            await cache.run("k", "key", "other-fp", flaky)
        return answer

    assert asyncio.run(run()) == ("ok", False)


def test_a_retry_waiting_on_a_cancelled_first_caller_runs_it_itself():
    async def run():
        cache = idempotency.IdempotencyCache()
        work = _FirstRequest()
        first = asyncio.create_task(cache.run("k", "key", "fp", work))
        await work.started.wait()
        retry = asyncio.create_task(cache.run("k", "key", "fp", work))  # waits on the first
        await asyncio.sleep(0)
        first.cancel()  # the first caller disconnects mid-run
        with pytest.raises(asyncio.CancelledError):
            await first
        work.release.set()
        answer = await retry  # neither a CancelledError nor a hang
        again = await cache.run("k", "key", "fp", work)  # the retry's answer is the stored one
        return answer, again, work.calls

    assert asyncio.run(asyncio.wait_for(run(), 10)) == ((2, False), (2, True), 2)


def test_bounded_by_ttl_and_size():
    async def run():
        cache = idempotency.IdempotencyCache(ttl_s=0.0, max_entries=2)

        async def work():
            return 1

        await cache.run("k", "a", "fp", work)
        expired = await cache.run("k", "a", "fp", work)  # ttl 0: already expired, runs again
        big = idempotency.IdempotencyCache(ttl_s=60, max_entries=2)
        for key in "abc":
            await big.run("k", key, "fp", work)
        return expired, len(big)

    expired, size = asyncio.run(run())
    assert expired == (1, False) and size == 2


def test_a_full_cache_never_evicts_a_request_still_running():
    """Evicting A while it ran let its retry score it again, and B failed (KeyError) when it ended."""

    async def run():
        cache = idempotency.IdempotencyCache(ttl_s=60, max_entries=1)
        first_a, first_b = _FirstRequest("A"), _FirstRequest("B")  # both run until released
        again = _FirstRequest("A again")

        a = asyncio.create_task(cache.run("k", "A", "fpA", first_a))
        await first_a.started.wait()
        b = asyncio.create_task(cache.run("k", "B", "fpB", first_b))  # the cache is full: A still runs
        await first_b.started.wait()
        retry = asyncio.create_task(cache.run("k", "A", "fpA", again))
        await settle()
        first_a.release.set()
        first_b.release.set()
        answers = await asyncio.wait_for(asyncio.gather(a, b, retry), 10)  # a retry run again would hang
        c = _FirstRequest("C", released=True)
        await cache.run("k", "C", "fpC", c)  # all done now: the bound holds again
        return answers, [first_a.calls, first_b.calls, again.calls, c.calls], len(cache)

    answers, calls, size = asyncio.run(run())
    assert answers == [("A", False), ("B", False), ("A", True)] and calls == [1, 1, 0, 1]  # A, B, C ran once
    assert size == 1


@pytest.mark.parametrize("key", ["has space", "x" * 256, "é"])
def test_malformed_keys_are_named(key):
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        idempotency.check_key(key)
    assert idempotency.check_key("3f1c-retry-1") == "3f1c-retry-1" and idempotency.check_key(None) is None


def test_a_retry_waits_for_its_first_request_only_within_its_own_time_budget():
    """A retry whose first request was still running waited for it without bound: past the retry's own
    budget the proxy cut it off with a bare timeout (no reason, no Retry-After). Now it answers 503
    StillRunning + Retry-After, saying when the first one is answered at the latest, and the same key sent
    again then gets the first request's answer."""

    async def run():
        cache = idempotency.IdempotencyCache(retry_after_s=2)
        work = _FirstRequest("scored")
        first = asyncio.create_task(cache.run("k", "key", "fp", work, RequestBudget(40.0, 43.0)))
        await work.started.wait()
        with pytest.raises(StillRunning) as caught:  # its budget spent (a 3-s x-request-timeout-seconds)
            await asyncio.wait_for(cache.run("k", "key", "fp", work, RequestBudget(0.0, 3.0)), 10)
        work.release.set()
        answer = await first
        replay = await cache.run("k", "key", "fp", work, RequestBudget(0.0, 3.0))  # done: no wait needed
        return caught.value, answer, replay, work.calls

    error, answer, replay, calls = asyncio.run(run())
    assert status_of(error) == (503, "UNAVAILABLE") and reason_of(error) == "StillRunning"
    assert "first request with this Idempotency-Key is still running" in str(error)
    assert "send it again with the same key after" in str(error)
    assert error.retry_after_s == 2  # the cache's own, well before the first request's 40-s budget ends
    assert re.search(r"still running \(it is answered within (39|40) s at the latest\)", str(error))
    assert answer == ("scored", False) and replay == ("scored", True) and calls == 1


def test_a_retry_that_stops_waiting_passes_on_the_first_requests_own_timeout_error():
    async def run():
        cache = idempotency.IdempotencyCache()
        started = asyncio.Event()

        async def times_out():
            started.set()
            await asyncio.sleep(0)
            raise TimeoutError("the first request's own stage timed out")

        first = asyncio.create_task(cache.run("k", "key", "fp", times_out))
        await started.wait()
        retry = cache.run("k", "key", "fp", times_out, RequestBudget(30.0, 33.0))
        with pytest.raises(TimeoutError, match="own stage"):
            await asyncio.wait_for(retry, 10)
        with pytest.raises(TimeoutError):
            await first

    asyncio.run(run())


def test_a_waiting_retry_that_scores_for_its_gone_first_request_is_admitted_again():
    """A retry gives its request slot back while it waits (limits.Slot) and takes it back after, even on a
    full replica. When its first caller went away mid-run (its Triton call still computing, counted by the
    limiter) the retry scores in its place only where admission would let a new request in: else 429."""
    abandoned = [0]

    async def run() -> tuple[BaseException, int, tuple[int, int]]:
        limiter = InFlightLimiter(2, retry_after_s=1, also=lambda: abandoned[0])
        cache = idempotency.IdempotencyCache()
        work = _FirstRequest("unreachable")  # never released

        async def request() -> tuple[str, bool]:
            with limiter.admit() as slot:
                return await cache.run("k", "key", "fp", work, held=slot)

        first = asyncio.create_task(request())
        await asyncio.wait_for(work.started.wait(), 10)
        retry = asyncio.create_task(request())
        await settle()
        waiting_holds = limiter.in_flight  # the first request only
        with limiter.admit():  # another caller takes the slot the retry gave back: the replica is full
            abandoned[0] = 1  # the first caller goes away; its Triton call runs on
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            with pytest.raises(Overloaded) as refused:
                await asyncio.wait_for(retry, 10)
        return refused.value, work.calls, (waiting_holds, limiter.in_flight)

    refused, calls, held = asyncio.run(run())
    assert status_of(refused) == (429, "RESOURCE_EXHAUSTED") and calls == 1 and held == (1, 0)


def test_a_redo_runs_once_for_concurrent_retries_and_one_cancelled_leaves_the_stored_answer():
    """A stored answer `Redo` calls out of date (clinical.py: a failed HL7 delivery) is redone by the retry
    that finds it; a retry meanwhile waits for that outcome within its own budget (StillRunning saying what
    runs), and when the redoing caller goes away a waiting retry redoes it in its place."""

    async def run():
        cache = idempotency.IdempotencyCache(retry_after_s=2)
        redone = _FirstRequest("delivered")  # runs until released, counting its runs
        redo = idempotency.Redo(lambda a: a == "failed", lambda _stored: redone(), "delivering it again")
        stored = await cache.run("k", "key", "fp", _FirstRequest("failed", released=True))
        first = asyncio.create_task(cache.run("k", "key", "fp", _FirstRequest(), redo=redo))
        await redone.started.wait()
        with pytest.raises(StillRunning) as caught:
            await asyncio.wait_for(
                cache.run("k", "key", "fp", _FirstRequest(), RequestBudget(0.0, 3.0), redo=redo), 10
            )
        waiting = asyncio.create_task(cache.run("k", "key", "fp", _FirstRequest(), redo=redo))
        await settle()
        first.cancel()  # its caller went away mid-delivery
        with pytest.raises(asyncio.CancelledError):
            await first
        await settle()
        redone.release.set()
        answer = await asyncio.wait_for(waiting, 10)
        replay = await cache.run("k", "key", "fp", _FirstRequest(), redo=redo)  # up to date: as is
        return stored, caught.value, answer, replay, redone.calls

    stored, error, answer, replay, calls = asyncio.run(asyncio.wait_for(run(), 30))
    assert stored == ("failed", False) and answer == ("delivered", True) and replay == ("delivered", True)
    assert calls == 2  # the cancelled redo and the waiting retry's; none for the later replay
    assert "another request with this Idempotency-Key is delivering it again" in str(error)
    assert "to get its answer" in str(error) and error.retry_after_s == 2
