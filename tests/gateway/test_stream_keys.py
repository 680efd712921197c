"""A stream id is its API key's own: two wards (two keys) that chose the same id hold two streams.

Before, ids were global: on one replica the second key was refused (`stream_id_taken`, 4400, final), on two
replicas each overwrote or dropped the other's checkpoint, and the router sent one ward's resume to the other
ward's replica (refused there). Now the registry, the checkpoint store and the router name a stream by its id
and the API key id (preprocess_service/stream/affinity.py `caller`, `routing_key`). The two-replica run with
two keys is in test_stream_affinity.py.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from starlette.websockets import WebSocket
from support.serve_requests import pending, scope, scope_pickle

from preprocess_service.stream import affinity
from preprocess_service.stream.checkpoints import LocalCheckpoints, RayCheckpoints
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import STREAM_ROUTE, Start
from preprocess_service.stream.registry import StreamRegistry

SID = "bed-07-shared"
WARD_A, WARD_B = "Bearer ward-a-key-" + "a" * 20, "Bearer ward-b-key-" + "b" * 20


def start(**kw) -> Start:
    return Start(type="start", mode="audio", stream_id=SID, **kw)


def test_two_keys_with_one_stream_id_hold_two_streams_each_resuming_its_own():
    reg = StreamRegistry(StreamLimits(max_streams_per_key=1), 10**7)
    a_key, b_key = "key-0a0a0a0a0a0a", "key-0b0b0b0b0b0b"  # API key ids (audit.key_id), never the keys
    a, resumed_a = reg.acquire(start(), SID, a_key)
    b, resumed_b = reg.acquire(start(), SID, b_key)  # before: refused, `stream_id_taken`
    assert a is not b and not resumed_a and not resumed_b and reg.count() == 2
    a.event_seq, b.event_seq = 40, 7
    reg.detach(a)
    reg.detach(b)
    again_b, resumed = reg.acquire(start(last_event=6), SID, b_key)
    assert again_b is b and resumed and b.event_seq == 7
    again_a, resumed = reg.acquire(start(last_event=39), SID, a_key)
    assert again_a is a and resumed and a.event_seq == 40
    assert set(reg.attach_times()) == {(SID, a_key), (SID, b_key)}
    stats = json.dumps(affinity.routing_stats(reg.attach_times()))
    assert SID not in stats and a_key not in stats  # Serve's state names neither


def test_the_checkpoint_store_keeps_each_keys_stream_apart():
    local = LocalCheckpoints(ttl_s=60)
    local.put(SID, "key-a", {"n": 1})
    local.put(SID, "key-b", {"n": 2})  # before: overwrote ward A's, which A's resume then found missing

    async def read() -> tuple:
        return await local.get(SID, "key-a"), await local.get(SID, "key-b")

    assert asyncio.run(read()) == ({"n": 1}, {"n": 2})
    local.drop(SID, "key-b")  # ward B's stream ended: ward A's checkpoint stays
    assert asyncio.run(read()) == ({"n": 1}, None)

    sent = []
    actor = SimpleNamespace(put_many=SimpleNamespace(remote=lambda batch, ttl_s: sent.append(batch)))

    async def flush() -> None:
        ray = RayCheckpoints(actor, ttl_s=60.0)
        ray.put(SID, "key-a", {"n": 1})
        ray.put(SID, "key-b", {"n": 2}, now=True)

    asyncio.run(flush())
    assert sent == [
        {
            affinity.routing_key(SID, "key-a"): ("key-a", {"n": 1}),
            affinity.routing_key(SID, "key-b"): ("key-b", {"n": 2}),
        }
    ]


def _route_key(authorization: str | None) -> str:
    """The routing key the Gateway replica reports for the stream SID this request opens: its key id as the
    route reads it (Starlette's `ws.headers`), through the registry and `record_routing_stats`."""
    ws = WebSocket(scope(STREAM_ROUTE, b"", authorization=authorization), receive=None, send=None)
    reg = StreamRegistry(StreamLimits(), 10**7)
    reg.acquire(start(), SID, affinity.caller(ws.headers.get("authorization")))
    (key,) = affinity.routing_stats(reg.attach_times())[affinity.STAT]
    return key


def test_the_router_finds_the_key_the_replica_reports_and_each_wards_resume_its_own_holder():
    query = f"stream_id={SID}".encode()
    for authorization in (WARD_A, WARD_B, None):  # None: auth disabled, no header (one namespace, as before)
        hint = affinity.stream_hint(pending(scope_pickle(STREAM_ROUTE, query, authorization=authorization)))
        assert hint == _route_key(authorization)
    a_holder = SimpleNamespace(replica_id="a", routing_stats={affinity.STAT: {_route_key(WARD_A): 100.0}})
    b_holder = SimpleNamespace(replica_id="b", routing_stats={affinity.STAT: {_route_key(WARD_B): 200.0}})
    router = affinity.StreamAffinityRouter.__new__(affinity.StreamAffinityRouter)
    router.apply_locality_routing = lambda pending: {"a", "b"}
    for authorization, holder in ((WARD_A, a_holder), (WARD_B, b_holder)):
        resume = pending(scope_pickle(STREAM_ROUTE, query, authorization=authorization))
        ranks = asyncio.run(router.choose_replicas([a_holder, b_holder], resume))
        assert ranks[0] == [holder]  # before: both to b, attached last; ward A's refused there


def test_a_resume_that_starts_afresh_numbers_on_after_the_events_the_client_holds():
    """Its held copy and checkpoint gone (another replica, a store restart), the resume starts afresh: its
    events were numbered from 0 again, below the client's last_event, so the client's next resume asked for
    events after a number the new stream had not reached and missed what it had sent."""
    reg = StreamRegistry(StreamLimits(), 10**7)
    fresh, resumed = reg.acquire(start(last_event=41), SID, "key-0a0a0a0a0a0a")
    assert not resumed and fresh.event_seq == 42
    other = Start(type="start", mode="audio", stream_id="bed-08-other")
    first, _ = reg.acquire(other, "bed-08-other", "key-0a0a0a0a0a0a")
    assert first.event_seq == 0
