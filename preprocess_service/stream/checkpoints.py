"""A stream's alert state kept outside its replica, so a resume after the replica is gone keeps it.

A stream's buffers and FaceLandmarker live in the Gateway replica that holds it (registry.py). When that
replica goes (a scale-down, a redeploy, a crash), a resume lands on another replica and starts afresh; before
this store, its baseline, its sustained-pain run and an alert already raised were lost with it, so a patient
in pain went unalerted until a new baseline and a new run had been built. Each replica therefore writes the
alert part of every stream's state (AlertMonitor.snapshot, the event count, the start message) to one store
every replica reaches, as it stands after each batch of windows, scored or failed (Triton down: the copy
must outlive an outage longer than its TTL), sent within FLUSH_S, and when the stream's connection ends
(sent at once); a reconnect that finds no state on its replica restores it
(`started.restored`). The media buffers are not kept: the restored stream's windows start from its new data.

The store is one detached Ray actor per cluster, on the head node (which a scale-down does not remove), named
STORE_NAME. It holds derived numbers only (scores, counters, times), never media, in memory, for the writer's
`resume_ttl_s` after the write of the copy it keeps (of one stream's copies, the one with the most events: a
late write from a replica the stream has left neither replaces it nor shortens it), keyed by a hash of the
stream id within its API key id (affinity.routing_key: the same id under two keys is two streams, neither
overwriting the other's state) and bound to that key id, as a resume is. A store that does not answer within
GET_TIMEOUT_S costs a resume its state, never its start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from preprocess_service.stream.affinity import routing_key

log = logging.getLogger("avpenet.gateway.stream")
# Versioned with the Store's code and key scheme: a detached actor outlives a Gateway redeploy, so one of the
# same name would keep running the old code (v2: keys within an API key, the copy that went furthest kept).
# The store a previous version left is idle; remove it by name with ray.kill (docs/DEPLOY.md).
STORE_NAME = "avpenet-stream-checkpoints-v2"
NAMESPACE = "avpenet"
MAX_ENTRIES = 8192  # streams kept at once across the cluster (64 per replica x 128 replicas)
GET_TIMEOUT_S = 2.0
# A replica sends its streams' latest checkpoints in one call this often. One actor call per checkpoint cost
# the caller 1.5-1.7 ms of CPU on the AMD build box (40 streams: 60-70 ms a second), batched 0.12-0.16 ms
# (`python -m loadtests.checkpoint_cpu`). A replica that dies loses at most this much of its alert history.
FLUSH_S = 1.0


class Checkpoints(Protocol):
    def put(self, stream_id: str, key_id: str, snapshot: dict, now: bool = False) -> None: ...
    async def get(self, stream_id: str, key_id: str) -> dict | None: ...
    def drop(self, stream_id: str, key_id: str) -> None: ...


class Store:
    """The checkpoints themselves: routing key (a hash of the stream id and its API key id) -> (expiry, API
    key id, snapshot), in the order they were last replaced.

    Writes of one stream can arrive out of order: a replica's late close-write (after a drain) may follow the
    writes of the replica the stream moved to. The store keeps the copy that went furthest (`supersedes`),
    with the expiry of its own write: a stale write neither replaces it nor changes its TTL."""

    def __init__(
        self, ttl_s: float, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`ttl_s`: for a write that names none; `clock`: of the TTL (tests drive it)."""
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self.entries: dict[str, tuple[float, str, dict]] = {}

    def put(self, key: str, key_id: str, snapshot: dict, ttl_s: float | None = None) -> None:
        """Keep `snapshot` for `ttl_s` (the writer's `resume_ttl_s`) unless the copy held went further."""
        held = self.entries.get(key)
        alive = held is not None and held[0] >= self.clock()  # an expired copy no longer stands in the way
        if alive and held[1] == key_id and not supersedes(snapshot, held[2]):
            return
        self.entries.pop(key, None)  # re-inserted last: the dict stays in write order
        self.entries[key] = (self.clock() + (self.ttl_s if ttl_s is None else ttl_s), key_id, snapshot)
        self._sweep()

    def get(self, key: str, key_id: str) -> dict | None:
        self._sweep()
        hit = self.entries.get(key)
        alive = hit is not None and hit[0] >= self.clock()  # one behind a longer-lived entry: not yet swept
        return hit[2] if alive and hit[1] == key_id else None

    def put_many(self, batch: dict[str, tuple[str, dict]], ttl_s: float | None = None) -> None:
        """Each of `batch`; `ttl_s`: the sender's `resume_ttl_s`, which a config change may have changed (the
        actor outlives the replicas that made it). It applies to the copies this batch writes only."""
        for key, (key_id, snapshot) in batch.items():
            self.put(key, key_id, snapshot, ttl_s)

    def drop(self, key: str) -> None:
        self.entries.pop(key, None)

    def _sweep(self) -> None:
        """Forget from the oldest write on while it has expired or the store is over its cap."""
        now = self.clock()
        while self.entries:
            oldest = next(iter(self.entries))
            if self.entries[oldest][0] >= now and len(self.entries) <= self.max_entries:
                return
            del self.entries[oldest]


def supersedes(new: dict, held: dict) -> bool:
    """Whether checkpoint `new` replaces `held`, of the same stream id and key: one of another start message
    is another stream (the later write wins); of the same start, the one that went as far or further (its
    event count: as registry.acquire prefers a checkpoint to a copy it holds only when it has more events)."""
    if new.get("start") != held.get("start"):
        return True
    return int(new.get("event_seq", 0)) >= int(held.get("event_seq", 0))


class LocalCheckpoints:
    """The store in this process: a Gateway outside Ray (unit tests, in-process tools)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = Store(ttl_s, clock=clock)

    def put(self, stream_id: str, key_id: str, snapshot: dict, now: bool = False) -> None:
        self.store.put(routing_key(stream_id, key_id), key_id, snapshot)

    async def get(self, stream_id: str, key_id: str) -> dict | None:
        return self.store.get(routing_key(stream_id, key_id), key_id)

    def drop(self, stream_id: str, key_id: str) -> None:
        self.store.drop(routing_key(stream_id, key_id))


class RayCheckpoints:
    """The cluster's store actor: each stream's latest checkpoint goes out within FLUSH_S, all of a replica's
    streams in one call, without waiting; a read waits at most GET_TIMEOUT_S."""

    def __init__(self, actor, ttl_s: float, flush_s: float = FLUSH_S) -> None:
        self.actor, self.ttl_s, self.flush_s = actor, ttl_s, flush_s
        self.pending: dict[str, tuple[str, dict]] = {}
        self._flush: asyncio.Task | None = None

    def put(self, stream_id: str, key_id: str, snapshot: dict, now: bool = False) -> None:
        """`now`: send what is pending at once (a stream's connection ended: a resume may go elsewhere)."""
        self.pending[routing_key(stream_id, key_id)] = (key_id, snapshot)
        if now:
            self._send()
        elif self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._send_soon())

    async def _send_soon(self) -> None:
        await asyncio.sleep(self.flush_s)
        self._send()

    def _send(self) -> None:
        batch, self.pending = self.pending, {}
        if batch:
            self.actor.put_many.remote(batch, self.ttl_s)

    async def get(self, stream_id: str, key_id: str) -> dict | None:
        try:
            ref = self.actor.get.remote(routing_key(stream_id, key_id), key_id)
            return await asyncio.wait_for(ref, GET_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 (the store gone or slow: the resume starts afresh)
            log.warning("stream checkpoint store did not answer (%s): the resume starts afresh", exc)
            return None

    def drop(self, stream_id: str, key_id: str) -> None:
        key = routing_key(stream_id, key_id)
        self.pending.pop(key, None)
        self.actor.drop.remote(key)  # after any earlier send: a caller's calls keep order


def connect(ttl_s: float) -> Checkpoints:
    """The cluster's store (created by the first replica that asks), or one in this process outside Ray."""
    import ray

    if not ray.is_initialized():
        return LocalCheckpoints(ttl_s)
    actor = (
        ray.remote(Store)
        .options(
            name=STORE_NAME,
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            max_restarts=-1,
            resources={"node:__internal_head__": 0.001},
        )  # fmt: skip
        .remote(ttl_s)
    )
    return RayCheckpoints(actor, ttl_s)
