"""A stream's alert checkpoint stays in the store through an inference outage (Triton down).

Before, a batch whose scoring failed returned before the checkpoint was written, so the store's copy, kept
`resume_ttl_s` after its last write, expired while the stream was still open; a replica lost after a minute of
Triton outage then took an alert that was on with it. Time is driven: the store's clock is the test's.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np

from avpenet import contract
from preprocess_service.errors import TritonUnavailable
from preprocess_service.stream.alerts import Window
from preprocess_service.stream.checkpoints import LocalCheckpoints
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import Start, StreamConfig
from preprocess_service.stream.registry import StreamRegistry
from preprocess_service.stream.session import Session
from preprocess_service.stream.state import ReadyWindow

TTL_S = 60.0
SID, KEY = "bed-21-outage", "key-1"


class _Counter:
    def labels(self, *_: str) -> _Counter:
        return self

    def inc(self, *_: float) -> None:
        pass


class _DownTriton:
    async def infer(self, inputs: dict, request_id: str) -> None:
        raise TritonUnavailable("Triton is unavailable; retry", retry_after_s=5)


def _window(i: int) -> ReadyWindow:
    return ReadyWindow(i, float(i), contract.window_end_s(i), {"x": np.zeros(1)}, True, False)


def test_an_alert_stays_checkpointed_through_an_outage_longer_than_the_ttl():
    clock = [0.0]
    store = LocalCheckpoints(TTL_S, clock=lambda: clock[0])
    puts: list[float] = []
    put = store.put

    def counted(stream_id: str, key_id: str, snapshot: dict, now: bool = False) -> None:
        puts.append(clock[0])
        put(stream_id, key_id, snapshot, now)

    store.put = counted
    reg = StreamRegistry(StreamLimits(resume_ttl_s=TTL_S), 10**7)
    cfg = StreamConfig(threshold=6, windows=3)
    entry, _ = reg.acquire(Start(type="start", mode="audio", stream_id=SID, config=cfg), SID, KEY)
    for i in range(4):  # the alert is raised while Triton answers
        entry.monitor.feed(Window(i, float(i), i + 3.0, 8.0, 7.0, 9.0, "severe", 1.0, 0.0))
    assert entry.monitor.alerting
    store.put(SID, KEY, entry.checkpoint())  # what the last scored batch wrote
    service = SimpleNamespace(triton=_DownTriton(), watchdog=SimpleNamespace(ensure_started=lambda: None))
    hub = SimpleNamespace(
        registry=reg, service=service, checkpoints=store, metrics=SimpleNamespace(events=_Counter())
    )
    session = Session(None, hub, entry, resumed=False)
    session.connected = False  # events are only recorded: this test reads the store

    async def outage() -> None:  # a window a second for 90 s, every one failing
        for i in range(4, 94):
            clock[0] += 1.0
            await session._score([(_window(i), clock[0])])

    asyncio.run(outage())
    assert {e.get("code") for e in entry.events} == {"unavailable"}  # each failed window said so
    clock[0] += 1.0  # the replica is lost now: a resume elsewhere reads the store
    kept = asyncio.run(store.get(SID, KEY))
    assert kept is not None, "the checkpoint expired during the outage"
    assert kept["alert"]["alerting"] and kept["event_seq"] == entry.event_seq
    assert len(puts) == 1 + 90  # one write a batch, failed or not: the cadence of a scored stream


class _ForeignFailure(Exception):
    """Not the gateway's: a library exception that happens to carry retry_after_s (Ray's backpressure)."""

    retry_after_s = 1.0


class _BrokenTriton:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def infer(self, inputs: dict, request_id: str) -> None:
        raise self.exc


def test_a_failed_window_tells_the_gateways_own_reason_and_never_a_foreign_exceptions_text():
    reg = StreamRegistry(StreamLimits(resume_ttl_s=TTL_S), 10**7)
    entry, _ = reg.acquire(Start(type="start", mode="audio", stream_id=SID), SID, KEY)
    details = []
    for exc in (
        TritonUnavailable("Triton is unavailable; retry", retry_after_s=5),
        _ForeignFailure("q=64/64"),
    ):
        service = SimpleNamespace(
            triton=_BrokenTriton(exc), watchdog=SimpleNamespace(ensure_started=lambda: None)
        )
        hub = SimpleNamespace(
            registry=reg,
            service=service,
            checkpoints=LocalCheckpoints(TTL_S),
            metrics=SimpleNamespace(events=_Counter()),
        )
        session = Session(None, hub, entry, resumed=False)
        session.connected = False
        asyncio.run(session._score([(_window(len(details)), 0.0)]))
        details.append(entry.events[-1]["detail"])
    assert details == ["Triton is unavailable; retry", "internal error"]
