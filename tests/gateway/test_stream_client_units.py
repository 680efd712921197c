"""The stream client's own bookkeeping across reconnects, against a fake connection (no server)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.stream import client, replay
from preprocess_service.stream.protocol import FRAME_TIME, parse_chunk


class _Conn:
    def __init__(self) -> None:
        self.sent: list = []

    async def send(self, data) -> None:
        self.sent.append(data)

    async def close(self) -> None:
        pass


def _stream(resumed: bool, restored: bool = False) -> client.Stream:
    started = {"type": "started", "stream_id": "bed-1", "resumed": resumed, "restored": restored,
               "next_seq": {"audio": 0, "frame": 0}}  # fmt: skip
    opened = {"url": "ws://x/v1/stream", "api_key": None, "start": {"type": "start"}, "timeout_s": 1.0}
    return client.Stream(_Conn(), started, opened)


def test_a_second_drop_before_any_event_still_resumes_after_the_last_event(monkeypatch):
    """The reconnected stream forgot the last event, so the next reconnect asked from -1: the server replayed
    every kept event (an old alert among them) or, on another replica, did not restore the alert state."""
    asked: list[int] = []

    async def reopened(url, api_key, start, **_):
        asked.append(start["last_event"])
        return _stream(resumed=len(asked) == 1, restored=len(asked) == 2)

    monkeypatch.setattr(client, "open_stream", reopened)
    first = _stream(resumed=False)
    first.events = [{"type": "score", "seq": s} for s in range(58)]
    second = asyncio.run(first.reconnect())  # resumed: events number on
    third = asyncio.run(second.reconnect())  # restored elsewhere: they number on too
    asyncio.run(third.reconnect())
    assert asked == [57, 57, 57]
    fresh = _stream(resumed=False)  # afresh (no state, no checkpoint): the server numbers on after 57 too
    monkeypatch.setattr(client, "open_stream", lambda *a, **k: asyncio.sleep(0, fresh))
    assert asyncio.run(third.reconnect()).last_event == 57  # was -1: a second drop then asked as a first open


def test_frames_carry_capture_times_from_the_servers_stream_start():
    """After a resume that began a new stream at tick 300, frame 300 is t=0, not 30 s ahead (closed 4409)."""
    track = FaceTrack.empty(305, (64, 48))
    rec = replay.Recording(track=track)
    stream = _stream(resumed=False)
    asyncio.run(replay.send_recording(stream, rec, speed=0, first_tick=300, origin_tick=300, end=False))
    times = [parse_chunk(c)[0][FRAME_TIME] for c in stream.conn.sent if isinstance(c, bytes)]
    assert np.allclose(times, np.arange(5) / contract.FPS)


def test_a_reconnect_rides_out_a_gateway_restart_but_not_a_refusal(monkeypatch):
    """A connection refused, a 503 at the upgrade or a busy id pass in a moment: retried with backoff. A
    refusal of the request itself (a bad key) is final at once. Before, only `stream_id_busy` was retried, so
    `avpenet monitor --reconnects` ended on the first refused connection of a gateway restarting."""
    outcomes = [
        ConnectionRefusedError(111, "Connection refused"),
        client.StreamRefused("stream refused at the WebSocket upgrade: HTTP 503", retryable=True),
        client.StreamRefused("stream refused: stream_id_busy: retry", retryable=True),
    ]
    calls: list[int] = []

    async def reopened(*_args, **_kw):
        calls.append(1)
        if outcomes:
            raise outcomes.pop(0)
        return _stream(resumed=True)

    monkeypatch.setattr(client, "open_stream", reopened)
    first = _stream(resumed=False)
    assert asyncio.run(first.reconnect(busy_timeout_s=10)).started["resumed"] and len(calls) == 4
    outcomes.append(client.StreamRefused("stream refused: 4401 unknown API key", retryable=False))
    with pytest.raises(client.StreamRefused, match="4401"):
        asyncio.run(first.reconnect(busy_timeout_s=10))
    assert len(calls) == 5


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (401, False), (404, False)])
def test_an_upgrade_serves_proxy_could_not_hand_to_a_replica_is_retried(monkeypatch, status, retryable):
    """Serve's proxy answers HTTP 500 to a WebSocket it could not hand to a replica (its router's queue
    full: a burst of monitors reconnecting at once), while the gateway refuses with close codes. Before, a
    500 was final, so `Stream.reconnect` gave up on a burst that a moment later had room."""
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import Response

    async def refused(*_args, **_kw):
        raise InvalidStatus(Response(status, "refused", Headers(), b""))

    monkeypatch.setattr(client, "connect", refused)
    with pytest.raises(client.StreamRefused, match=f"HTTP {status}") as info:
        asyncio.run(client.open_stream("ws://127.0.0.1:1/v1/stream", "k", {"type": "start", "mode": "audio"}))
    assert info.value.retryable is retryable
