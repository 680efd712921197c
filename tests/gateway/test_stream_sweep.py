"""A dropped stream never resumed is forgotten after its resume window even when no other stream opens.

Before, expired detached streams were swept only when a stream was acquired: on a quiet replica (a ward's
devices gone for the night) their FaceLandmarkers stayed open and `avpenet_gateway_streams_held` kept
counting them. Now the replica's first stream starts a periodic sweep (route.StreamHub). Time is driven here:
the hub's clock and sleep are the test's.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.metrics import HELD
from preprocess_service.stream.protocol import Start
from preprocess_service.stream.route import SWEEP_S, StreamHub

TTL_S = 60.0


def test_an_expired_stream_is_closed_and_uncounted_on_a_quiet_replica():
    clock = [1000.0]
    metrics = CollectorRegistry()
    settings = SimpleNamespace(
        streams=StreamLimits(resume_ttl_s=TTL_S), limits=SimpleNamespace(max_pixels=10**7)
    )

    async def passing(seconds: float) -> None:  # the sweep's sleep: the time passes at once
        clock[0] += seconds
        await asyncio.sleep(0)

    hub = StreamHub(
        SimpleNamespace(settings=settings, metrics=SimpleNamespace(registry=metrics)),
        lambda: clock[0],
        passing,
    )
    start = Start(type="start", mode="audio", stream_id="bed-08-quiet")
    kept, _ = hub.registry.acquire(start, "bed-08-quiet", "key-1")
    dropped, _ = hub.registry.acquire(
        start.model_copy(update={"stream_id": "bed-09-quiet"}), "bed-09-quiet", "key-1"
    )
    closed_at: dict[str, float] = {}
    for entry in (kept, dropped):
        entry.state.close = lambda sid=entry.stream_id: closed_at.setdefault(sid, clock[0])
    hub.metrics.held.set(hub.registry.count())
    hub.registry.detach(dropped)  # its link dropped at 1000 s; no stream opens after it
    detached_at = clock[0]

    async def quiet_night() -> None:
        hub.ensure_sweeping()  # what each stream's handler does (the first one starts the sweep)
        for _ in range(1000):
            if closed_at:
                break
            await asyncio.sleep(0)
        await hub.close()

    asyncio.run(quiet_night())
    assert list(closed_at) == ["bed-09-quiet"]  # the attached stream is kept, however long it runs
    assert detached_at + TTL_S < closed_at["bed-09-quiet"] <= detached_at + TTL_S + SWEEP_S
    assert hub.registry.count() == 1 and metrics.get_sample_value(HELD) == 1.0
