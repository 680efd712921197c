"""Version pins and the versions that actually produced an answer.

A request may pin the ensemble or any part (`model_versions: {"fusion": "2"}`). Triton serves one version per
part (`version_policy: latest 1`) and the ensemble's steps use the newest served one, so a pin can only be
honoured when that version is the one served: an unknown or unserved version is 404 / NOT_FOUND naming it.
The ensemble pin is also passed to Triton with the call. The versions reported with an answer are read fresh
from Triton's repository index right before and right after the call; if a rollout changed them in between,
the call is repeated (the answer could have come from either), so the report is never a stale cache.

What a pin may be is one rule for both protocols: `normalise` reads HTTP's `name=version,...` field (`parse`)
and gRPC's map alike, and `validate` checks the result for every request.

Concurrent requests share those reads (`FreshReads`): a request takes the result of a read that STARTED after
it asked, which is as fresh as one of its own. Each read costs ~0.4 ms of gateway CPU and ~0.2 ms of Triton's
(loopback); 300 requests 16 at a time (`loadtests.gateway_cpu`'s loop) made 295 reads instead of 600.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Generic, TypeVar

from preprocess_service.errors import InvalidRequest, NotFound

Served = dict[str, list[str]]  # model -> READY versions, ascending
T = TypeVar("T")

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a Triton model name
VERSION_RE = re.compile(r"[0-9]{1,9}")  # ASCII digits: str.isdigit() also takes "²" and "٢"
MAX_PINS = 8
MAX_BYTES = 256  # written as `name=version,...`: HTTP's form field limit (multipart.MAX_TEXT_BYTES), for both
MALFORMED = "model_versions must be name=version pairs, comma-separated, such as avpenet=1"


def normalise(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A request's pins, whichever protocol carried them: at most MAX_BYTES written as `name=version,...`
    (measured as sent), surrounding whitespace of each name and version ignored, each name once. HTTP's
    multipart field and gRPC's map both come through here, so a pin one protocol takes the other takes."""
    pairs = list(pairs)
    if len(",".join(f"{name}={version}" for name, version in pairs).encode()) > MAX_BYTES:
        raise InvalidRequest(f"model_versions is longer than {MAX_BYTES} bytes (written as name=version,...)")
    pins: dict[str, str] = {}
    for name, version in pairs:
        if name.strip() in pins:
            raise InvalidRequest(MALFORMED)
        pins[name.strip()] = version.strip()
    return pins


def parse(text: str) -> dict[str, str]:
    """`avpenet=1,fusion=17` → {"avpenet": "1", "fusion": "17"} (the HTTP form of version pins)."""
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, version = item.partition("=")
        if not sep:
            raise InvalidRequest(MALFORMED)
        pairs.append((name, version))
    return normalise(pairs)


def validate(pins: Mapping[str, str]) -> None:
    """InvalidRequest unless every pin is a model name and a version number, at most MAX_PINS of them."""
    if len(pins) > MAX_PINS:
        raise InvalidRequest(f"model_versions pins at most {MAX_PINS} models")
    if not all(NAME_RE.fullmatch(name) and VERSION_RE.fullmatch(version) for name, version in pins.items()):
        raise InvalidRequest(MALFORMED)


class FreshReads(Generic[T]):
    """Single-flight reads that are never older than the request: `get()` answers with a read started after
    the call. A read already in flight started earlier, so a caller waits it out and then joins (or starts)
    the next one. Callers share a read's result (read-only) or its exception; one that gives up does not
    cancel it. A read in flight is waited out for at most its own deadline (TritonClient.repository's)."""

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._in_flight: asyncio.Task[T] | None = None
        self.reads = 0  # reads started (against the callers' count, what sharing saved)

    async def get(self) -> T:
        task = self._current()
        if task is not None:  # started before this call: not fresh enough to answer it
            await asyncio.wait([task])
        task = self._current()  # a read started after this call (by another waiter), or none yet
        if task is None:
            task = self._in_flight = asyncio.get_running_loop().create_task(self._read())
            task.add_done_callback(self._finished)
            self.reads += 1
        return await asyncio.shield(task)

    def _current(self) -> asyncio.Task[T] | None:
        task = self._in_flight
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def _finished(self, task: asyncio.Task[T]) -> None:
        if self._in_flight is task:
            self._in_flight = None


def served(rows: list[dict[str, str]]) -> Served:
    """READY versions per model from `TritonClient.repository()` rows."""
    out: Served = {}
    for row in rows:
        if row.get("state") == "READY" and str(row.get("version", "")).isdigit():
            out.setdefault(row["name"], []).append(str(row["version"]))
    return {name: sorted(v, key=int) for name, v in out.items()}


def in_use(ready: Served) -> dict[str, str]:
    """The version each model runs now: the newest READY one (what an ensemble step with -1 uses)."""
    return {name: versions[-1] for name, versions in ready.items() if versions}


def check(pins: Mapping[str, str], ready: Served, known: set[str]) -> None:
    """NotFound naming the first pin that cannot be honoured (unknown model, or a version not in use)."""
    current = in_use(ready)
    for name, version in sorted(pins.items()):
        if name not in known and name not in current:
            raise NotFound(f"model_versions: no model named {name!r} (served: {', '.join(sorted(current))})")
        if current.get(name) != version:
            now = current.get(name, "none")
            raise NotFound(f"model_versions: {name} version {version} is not served (serving version {now})")
