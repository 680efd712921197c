"""`Idempotency-Key` (HTTP header, gRPC metadata): a retried request gets the first answer, not a new score.

A bounded TTL cache per gateway replica, keyed by (API key id, Idempotency-Key). The same key with the same
request (its fingerprint: clip digest and every field) returns the stored answer, marked as a replay; a retry
that arrives while the first is still running waits for it (and runs it itself if the first caller goes away
mid-run), for as long as its own time budget allows (budget.py): past it, 503 `StillRunning` + Retry-After,
not the proxy's bare timeout; meanwhile it gives its request slot back (limits.Slot), so repeats of one
request cannot fill the replica's `max_in_flight`. The same key with a different request is
refused (422). Failures are not stored, so a retry after
an error runs again. A stored answer its caller marks as out of date (`Redo`: an HL7 delivery that failed for
a reason that may pass) is brought up to date by the retry that finds it, once; other retries wait for that
outcome, and the stored answer is replaced by it. Across replicas nothing is shared: a
retry routed to another replica scores again, and the answer is still the same Observation identity only if
the caller also resends its X-Request-ID (docs/INTEGRATION.md). Answers live `ttl_s`, and past `max_entries`
the oldest answers are evicted first, so memory stays bounded. A request still running is never evicted (its
retries must find it, and it must find its own entry when it ends); those are bounded by the replica's
in-flight limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from preprocess_service.budget import RequestBudget, seconds
from preprocess_service.errors import InvalidRequest, StillRunning
from preprocess_service.limits import Slot

T = TypeVar("T")
HEADER = "idempotency-key"
KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces (IETF httpapi draft: a string)


class IdempotencyMismatch(InvalidRequest):
    """The key was already used for a different request (422 / INVALID_ARGUMENT)."""


def check_key(key: str | None) -> str | None:
    """The key if present and well formed; InvalidRequest naming the header otherwise."""
    if key is None or key == "":
        return None
    if not KEY_RE.match(key):
        raise InvalidRequest("Idempotency-Key must be 1-255 printable ASCII characters without spaces")
    return key


@dataclass(frozen=True)
class Redo(Generic[T]):
    """How a retry brings a stored answer up to date instead of replaying it as is. `needed(answer)` decides
    at once (no await), so that of two retries only the first starts `run(answer)`; the other waits for its
    outcome, as for a first request still running."""

    needed: Callable[[T], bool]
    run: Callable[[T], Awaitable[T]]
    doing: str  # what the running retry does, for one that stops waiting: 'delivering ... again'


@dataclass
class _Entry(Generic[T]):
    fingerprint: str
    future: asyncio.Future
    expires: float = field(default=0.0)
    ends_at: float = math.inf  # time.monotonic() when the running request's budget ends
    doing: str = ""  # set while a retry redoes a stored answer (Redo.doing); "" for a first request


class IdempotencyCache(Generic[T]):
    def __init__(self, ttl_s: float = 24 * 3600.0, max_entries: int = 10_000, retry_after_s: int = 1) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.retry_after_s = retry_after_s  # the least Retry-After of a retry that stopped waiting
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        for k in [k for k, e in self._entries.items() if e.future.done() and e.expires <= now]:
            del self._entries[k]
        excess = len(self._entries) - self.max_entries
        if excess > 0:  # the oldest answers first; a request still running stays
            for k in [k for k, e in self._entries.items() if e.future.done()][:excess]:
                del self._entries[k]

    def _drop(self, slot: tuple[str, str], entry: _Entry) -> None:
        if self._entries.get(slot) is entry:
            del self._entries[slot]

    async def run(
        self,
        scope: str,
        key: str | None,
        fingerprint: str,
        fn: Callable[[], Awaitable[T]],
        budget: RequestBudget | None = None,
        held: Slot | None = None,
        redo: Redo[T] | None = None,
    ) -> tuple[T, bool]:
        """(answer, replayed): `fn()` once per (scope, key) within the TTL; without a key, always `fn()`. A
        retry waits for a first request still running within its own `budget` (StillRunning past it), its
        request slot `held` given back while it waits (admitted again before it runs `fn()` itself). A retry
        that finds a stored answer `redo` says is out of date runs `redo` on it (still a replay)."""
        if key is None:
            return await fn(), False
        now = time.monotonic()
        self._evict(now)
        slot = (scope, key)
        waited = False
        while (entry := self._entries.get(slot)) is not None:
            if entry.fingerprint != fingerprint:
                raise IdempotencyMismatch(
                    "Idempotency-Key was already used with a different request; use a new key per request"
                )
            if redo is not None and entry.future.done() and redo.needed(entry.future.result()):
                if waited and held is not None:
                    held.readmit()  # as below: it works in its slot only where admission would let it
                return await self._redo(slot, entry, redo, budget), True
            waited = True
            try:
                with contextlib.nullcontext() if held is None else held.released():
                    answer = await self._wait(entry, budget)
                if redo is not None and redo.needed(answer) and self._entries.get(slot) is entry:
                    continue  # the answer waited for is already out of date (its delivery failed): redo it
                return answer, True
            except asyncio.CancelledError:
                if not entry.future.cancelled() or asyncio.current_task().cancelling():
                    raise  # this request itself was cancelled
                # the first caller (or a retry redoing its answer) went away mid-run: this retry runs it,
                # or waits on another retry that got there first
        if waited and held is not None:
            held.readmit()  # its slot was taken back whatever the load: it scores only where admission would
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._entries[slot] = entry = _Entry(
            fingerprint, future, expires=math.inf, ends_at=math.inf if budget is None else budget.ends_at
        )
        self._evict(now)
        try:
            answer = await fn()
        except asyncio.CancelledError:
            self._drop(slot, entry)
            future.cancel()  # waiting retries see a cancelled run, not an error of theirs, and run it again
            raise
        except BaseException as exc:
            self._drop(slot, entry)  # not stored: a retry runs again
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        future.set_result(answer)
        entry.expires = time.monotonic() + self.ttl_s
        return answer, False

    async def _redo(
        self, slot: tuple[str, str], stored: _Entry, redo: Redo[T], budget: RequestBudget | None
    ) -> T:
        """`redo.run` on the stored answer, its outcome stored in its place (same expiry: the key's window
        still starts at its first use). Retries meanwhile wait on it. Cancelled or failed, the stored answer
        is put back as it was, so a later retry redoes it (a waiting one at once)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ends_at = math.inf if budget is None else budget.ends_at
        self._entries[slot] = entry = _Entry(stored.fingerprint, future, math.inf, ends_at, redo.doing)
        try:
            answer = await redo.run(stored.future.result())
        except BaseException as exc:
            if self._entries.get(slot) is entry:
                self._entries[slot] = stored
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()  # waiting retries find the stored answer again and redo it themselves
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        entry.expires = stored.expires
        future.set_result(answer)
        return answer

    async def _wait(self, entry: _Entry, budget: RequestBudget | None) -> T:
        """The running request's answer (or its error), waited for at most what is left of `budget`: the
        proxy would cut the retry off at its end with a bare timeout, and the caller could not tell a
        retry stuck behind its first request from a lost one."""
        left_s = math.inf if budget is None else budget.remaining_s()
        if budget is None or math.isinf(left_s):
            return await asyncio.shield(entry.future)
        timeout = asyncio.timeout(max(left_s, 0.0))
        try:
            async with timeout:
                return await asyncio.shield(entry.future)
        except TimeoutError:
            if not timeout.expired():
                raise  # the first request's own error
        ends_in_s = entry.ends_at - time.monotonic()  # the first one's budget: answered by then
        retry, latest = self.retry_after_s, ""
        if 0 < ends_in_s < math.inf:
            retry = min(retry, math.ceil(ends_in_s))
            latest = f" (it is answered within {ends_in_s:.0f} s at the latest)"
        running = "not scored: the first request with this Idempotency-Key is still running"
        outcome = "the first request's"
        if entry.doing:  # a retry redoing the stored answer: there is one, it is being brought up to date
            running, outcome = (
                f"not answered: another request with this Idempotency-Key is {entry.doing}",
                "its",
            )
        raise StillRunning(
            f"{running}{latest} and this request's {seconds(budget.total_s)} s time budget ran out waiting "
            f"for it; send it again with the same key after {retry} s to get {outcome} answer",
            retry,
        )
