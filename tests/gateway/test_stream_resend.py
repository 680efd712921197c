"""A bedside device's resend after an outage: the chunks it buffered while its link was down go out in one
burst when it resumes.

Before, the gateway closed the stream 4409 `overloaded` as soon as its queue of chunks received but not yet
processed passed its item bound (300): a device that buffered a 50-s outage (1,000 chunks of audio and
landmark frames) lost its stream at the moment it recovered. Now the receiver stops reading at the bound until
the processor catches up (back-pressure), and a burst beyond what any outage explains is still closed 4409
`too_fast` once it passes `max_ahead_s`, with its reason (before: `overloaded`, 'send at real time', at the
300th chunk, whether it was a flood or not). The handler runs on a fake WebSocket and a fake Triton.

The pause is for a backlog a resume accounts for, not for a live stream the service cannot keep up with: one
whose scoring is slower than real time was taken from now and then, so it paused on and on while its unread
media piled up in Serve's proxy and its scores fell ever further behind (before the pause, it got 4409 at the
queue bound). It is closed 4409 `overloaded` once its processing is `max_ahead_s` behind real time.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.audit import key_id
from preprocess_service.budget import PROXY_TIMEOUT_HEADER
from preprocess_service.stream import protocol
from preprocess_service.stream.inbound import Inbound
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import CLOSE_NORMAL, CLOSE_SLOW_CONSUMER, encode_chunk
from preprocess_service.stream.route import StreamHub, serve_stream

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN, SID = "ward-9-token", "bed-40-resend"
LIVE_S, OUTAGE_S = 5, 50  # sent live, then buffered by the device while its link was down
TICK = contract.SAMPLES_PER_FRAME  # a device sends one frame and 1/FPS s of audio per tick
LIMITS = StreamLimits()
DISCONNECT = {"type": "websocket.disconnect", "code": 1006}


class _Triton:
    async def infer(self, inputs: dict, request_id: str) -> SimpleNamespace:
        outputs = {
            contract.SCORE.name: np.array([[3.0]], np.float32),
            contract.INTERVAL.name: np.array([[2.0, 4.0]], np.float32),
            contract.MODALITY_WEIGHTS.name: np.array([[0.5, 0.5]], np.float32),
        }
        return SimpleNamespace(outputs=outputs, model_version="1")


class _Socket:
    """A device's connection: its start message, then `messages` as fast as the server reads them."""

    def __init__(self, start: dict, messages: list[dict]) -> None:
        self.headers = {"authorization": f"Bearer {TOKEN}", PROXY_TIMEOUT_HEADER: "0"}
        self.query_params = {"stream_id": SID}
        self.inbox = deque([{"type": "websocket.receive", "text": json.dumps(start)}, *messages])
        self.events: list[dict] = []
        self.closed: tuple[int, str] | None = None
        self.took_s = 0.0  # wall-clock seconds the connection was served

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict:
        return self.inbox.popleft() if self.inbox else DISCONNECT

    async def send_text(self, text: str) -> None:
        self.events.append(json.loads(text))

    async def send_json(self, data: dict) -> None:
        self.events.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _hub(limits: StreamLimits = LIMITS, triton: _Triton | None = None) -> StreamHub:
    settings = SimpleNamespace(streams=limits, limits=SimpleNamespace(max_pixels=10**7))
    service = SimpleNamespace(
        settings=settings,
        metrics=SimpleNamespace(registry=CollectorRegistry()),
        authenticate=lambda token: None,
        triton=triton or _Triton(),
        watchdog=SimpleNamespace(ensure_started=lambda: None),
    )
    return StreamHub(service)


def _ticks(track: FaceTrack, first: int, last: int) -> list[dict]:
    """Ticks first..last-1 as a device sends them: 0.1 s of audio and a landmark frame with its time."""
    sound = np.full(TICK, 0.01, "<f4").tobytes()
    out = []
    for k in range(first, last):
        frame = protocol.landmark_frame_bytes(track, k % track.n_frames)
        out.append(encode_chunk({"kind": "audio", "seq": k, "rate": contract.SAMPLE_RATE}, sound))
        out.append(encode_chunk({"kind": "frame", "seq": k, "t": k / contract.FPS}, frame))
    return [{"type": "websocket.receive", "bytes": chunk} for chunk in out]


def _outage(entry, opened_s: float, outage_s: float) -> None:
    """Make `entry` a stream opened (its first chunk read) `opened_s` ago, its link lost `outage_s` ago."""
    entry.opened_at -= opened_s
    entry.first_chunk_at -= opened_s
    entry.read_at -= outage_s


def _after_an_outage(resent_s: int) -> tuple[_Socket, _Socket, list[int]]:
    """LIVE_S of a stream, its link lost for OUTAGE_S, then a resume that sends `resent_s` at once and ends.
    Returns both connections and the queue's length after each chunk put in it."""
    track = FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())
    start = {"type": "start", "mode": "landmarks", "age_group": "adult", "stream_id": SID,
             "image_size": [int(v) for v in track.image_size]}  # fmt: skip
    hub, live = _hub(), _ticks(track, 0, LIVE_S * contract.FPS)
    queued: list[int] = []
    put = Inbound.put

    def counted(inbound: Inbound, item) -> None:
        put(inbound, item)
        queued.append(len(inbound.items))

    async def device() -> tuple[_Socket, _Socket]:
        first = _Socket(start, [*live, DISCONNECT])
        await serve_stream(hub, first)
        entry = hub.registry.streams[(SID, key_id(TOKEN))]
        _outage(entry, LIVE_S + OUTAGE_S, OUTAGE_S)  # it opened that long ago: its clock passed the outage
        backlog = _ticks(track, LIVE_S * contract.FPS, (LIVE_S + resent_s) * contract.FPS)
        seen = max((e["seq"] for e in first.events if "seq" in e), default=-1)
        end = {"type": "websocket.receive", "text": json.dumps({"type": "end"})}
        second = _Socket({**start, "last_event": seen}, [*backlog, end])
        began = time.monotonic()
        await serve_stream(hub, second)
        second.took_s = time.monotonic() - began
        await hub.close()
        return first, second

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Inbound, "put", counted)
        first, second = asyncio.run(device())
    return first, second, queued


def test_a_resend_of_a_50_s_outage_after_a_resume_is_scored_completely():
    first, second, queued = _after_an_outage(OUTAGE_S)
    assert second.events[0]["type"] == "started" and second.events[0]["resumed"] is True
    fatal = [e for e in second.events if e.get("fatal")]
    assert second.closed == (CLOSE_NORMAL, "stream ended") and not fatal, (second.closed, fatal)
    (end,) = [e for e in second.events if e["type"] == "end"]
    assert end["media_s"] == pytest.approx(LIVE_S + OUTAGE_S)
    scored = [e["window"] for e in first.events + second.events if e["type"] == "score"]
    assert sorted(scored) == list(range(end["windows"])) and end["windows"] >= LIVE_S + OUTAGE_S - 3
    # back-pressure: the queue never held more than its bound (and the one chunk that reached it)
    assert max(queued) <= LIMITS.max_pending_items + 1 and len(queued) > 2 * OUTAGE_S * contract.FPS


def test_a_burst_beyond_any_outage_is_still_closed_as_a_flood_with_its_reason():
    """Six minutes of media a minute after the stream opened: 5 minutes more than the outage explains."""
    _, second, queued = _after_an_outage(6 * 60)
    code, reason = second.closed
    (error,) = [e for e in second.events if e.get("fatal")]
    assert code == CLOSE_SLOW_CONSUMER and error["code"] == "too_fast", (second.closed, error)
    assert "ahead of real time" in reason and f"limit {LIMITS.max_ahead_s:g} s" in error["detail"]
    assert not [e for e in second.events if e["type"] == "end"]
    # refused at the limit, not later: the wall clock ran on while the resend was read (a loaded box: seconds)
    most = (LIVE_S + OUTAGE_S + second.took_s + LIMITS.max_ahead_s + 1) * 2 * contract.FPS
    assert len(queued) < most, len(queued)


class _SlowTriton(_Triton):
    """A saturated Triton: one window at a time, each taking longer than the 1 s of media a window adds."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.lock = asyncio.Lock()

    async def infer(self, inputs: dict, request_id: str) -> SimpleNamespace:
        async with self.lock:
            await asyncio.sleep(self.delay_s)
        return await super().infer(inputs, request_id)


class _LiveSocket(_Socket):
    """A device sending 0.1-s audio chunks at real time for `seconds`, then `end`: chunk k captured at
    `t0` + (k+1)/FPS (the loop's clock; its first chunk's read by default), from `first_seq` (a resume
    resends at once what it captured meanwhile), disconnecting before chunk `drop_at`. A chunk the server has
    not read yet waits for it, as in Serve's proxy queue; `sent` counts the chunks read, `first_at` and
    `last_at` are when the first and the last were."""

    def __init__(self, start: dict, seconds: int, first_seq: int = 0, t0: float | None = None) -> None:
        super().__init__(start, [])
        self.sent, self.ticks, self.t0 = first_seq, seconds * contract.FPS, t0
        self.first_at = self.last_at = 0.0
        self.gone = False  # the test gave up: the device disconnects
        self.drop_at: int | None = None

    async def receive(self) -> dict:
        if self.inbox:
            return self.inbox.popleft()  # the start message
        if self.gone or self.sent > self.ticks or self.sent == self.drop_at:
            return DISCONNECT
        if self.sent == self.ticks:
            self.sent += 1
            return {"type": "websocket.receive", "text": json.dumps({"type": "end"})}
        loop = asyncio.get_running_loop()
        self.t0 = loop.time() - self.sent / contract.FPS if self.t0 is None else self.t0
        await asyncio.sleep(self.t0 + (self.sent + 1) / contract.FPS - loop.time())  # captured by then
        header = {"kind": "audio", "seq": self.sent, "rate": contract.SAMPLE_RATE}
        self.sent += 1
        self.last_at = loop.time()
        self.first_at = self.first_at or self.last_at
        return {"type": "websocket.receive", "bytes": encode_chunk(header, np.zeros(TICK, "<f4").tobytes())}


async def _served(hub: StreamHub, device: _LiveSocket, scorer: _SlowTriton, timeout_s: float) -> bool:
    """Serve `device` until its connection ends; False if it was still open after `timeout_s` (then ended at
    once: the device gone, the scorer fast, so that the test fails fast)."""
    served = asyncio.ensure_future(serve_stream(hub, device))
    closed_in_time = (await asyncio.wait({served}, timeout=timeout_s))[0]
    if not closed_in_time:
        device.gone, scorer.delay_s = True, 0.0
    await served
    return bool(closed_in_time)


def test_a_live_stream_scored_slower_than_real_time_is_closed_overloaded_not_buffered_on():
    """Each window takes 2 s to score, one at a time: the stream falls 1 s behind real time per window. Small
    bounds (a queue of 0.5 s of audio, `max_ahead_s` 1 s) keep the test short; the defaults act the same at
    30 s and 10 s. Before, the receiver paused at the queue bound for as long as the stream ran (here it
    ended only when the test gave up), the device's media piling up unread."""
    limits = StreamLimits(max_pending_items=5, max_ahead_s=1.0)
    scorer = _SlowTriton(delay_s=2.0)
    hub = _hub(limits, scorer)
    start = {"type": "start", "mode": "audio", "age_group": "adult", "stream_id": SID}
    device = _LiveSocket(start, seconds=60)

    async def run() -> bool:
        served = asyncio.ensure_future(serve_stream(hub, device))
        closed_in_time = (await asyncio.wait({served}, timeout=30))[0]
        if not closed_in_time:  # it buffers on: end it (no delay, the device gone) so the test fails fast
            device.gone, scorer.delay_s = True, 0.0
        await served
        await hub.close()
        return bool(closed_in_time)

    closed_in_time = asyncio.run(run())
    fatal = [e for e in device.events if e.get("fatal")]
    assert closed_in_time, f"still open after 30 s: {device.sent} chunks read, {fatal}"
    code, reason = device.closed
    assert code == CLOSE_SLOW_CONSUMER and [e["code"] for e in fatal] == ["overloaded"], (code, fatal)
    assert reason.startswith("the service cannot keep up with this stream in real time"), reason
    assert "behind (limit 1 s)" in fatal[0]["detail"] and "add scoring capacity" in fatal[0]["detail"]
    assert [e for e in device.events if e["type"] == "score"]  # it was scored until then
    assert not [e for e in device.events if e["type"] == "end"] and device.sent < device.ticks


def _overloaded_limit_s(device: _LiveSocket) -> int:
    """The lag bound in the `overloaded` close of `device`'s connection (asserted to be one)."""
    fatal = [e for e in device.events if e.get("fatal")]
    assert device.closed and device.closed[0] == CLOSE_SLOW_CONSUMER, (device.closed, fatal)
    assert [e["code"] for e in fatal] == ["overloaded"], fatal
    return int(re.search(r"behind \(limit (\d+) s\)", fatal[0]["detail"]).group(1))


def _resume(device: _LiveSocket, hub: StreamHub, start: dict, t0: float) -> _LiveSocket:
    """The same device reconnecting: from the chunk after the last processed, its events up to the last."""
    entry = hub.registry.streams[(SID, key_id(TOKEN))]
    seen = max((e["seq"] for e in device.events if "seq" in e), default=-1)
    return _LiveSocket({**start, "last_event": seen}, 120, entry.state.next_seq["audio"], t0)


def test_a_stream_closed_as_it_cannot_keep_up_gains_no_lag_by_resuming():
    """Scored slower than real time, closed 4409 `overloaded` at `max_ahead_s` (3 s) behind, the device
    resumes at once (resending what it captured meanwhile): its bound is the one it had plus that outage, so
    it is closed again as soon as it falls further behind. Before, the resume's bound was its whole lag so far
    plus `max_ahead_s`: each close-and-resume let it fall 3 s (10 s by default) further behind."""
    limits = StreamLimits(max_pending_items=5, max_ahead_s=3.0)
    scorer = _SlowTriton(delay_s=2.0)
    hub = _hub(limits, scorer)
    start = {"type": "start", "mode": "audio", "age_group": "adult", "stream_id": SID}
    first = _LiveSocket(start, seconds=120)

    async def run() -> _LiveSocket | None:
        assert await _served(hub, first, scorer, 30), f"still open after 30 s: {first.sent} chunks read"
        second = _resume(first, hub, start, first.t0)
        closed_in_time = await _served(hub, second, scorer, 30)
        await hub.close()
        return second if closed_in_time else None

    second = asyncio.run(run())
    assert second is not None, "the resumed stream was still open after 30 s"
    assert _overloaded_limit_s(first) == 3
    outage = second.first_at - first.last_at  # from the last chunk read to the resume's first (a bit more)
    assert _overloaded_limit_s(second) <= 3 + outage + 1, (second.closed, outage)  # +1: rounding


def test_a_stream_that_caught_up_after_an_outage_then_slows_is_closed_at_max_ahead_s():
    """A 20-s outage (its clocks moved back) resent at once and processed: the stream has caught up, so its
    bound is `max_ahead_s` (2 s) again, and when its scoring then becomes slower than real time it is closed
    at that, not at the outage's 22 s. Before, a bound raised by an outage stayed for the stream's life."""
    limits = StreamLimits(max_pending_items=5, max_ahead_s=2.0)
    scorer = _SlowTriton(delay_s=0.0)
    hub = _hub(limits, scorer)
    start = {"type": "start", "mode": "audio", "age_group": "adult", "stream_id": SID}
    first, outage_s = _LiveSocket(start, seconds=120), 20.0
    first.drop_at = contract.FPS  # 1 s live, then the link drops

    async def run() -> _LiveSocket | None:
        await serve_stream(hub, first)
        _outage(hub.registry.streams[(SID, key_id(TOKEN))], outage_s, outage_s)
        second = _resume(first, hub, start, first.t0 - outage_s)
        loop = asyncio.get_running_loop()
        loop.call_later(3.0, setattr, scorer, "delay_s", 2.0)  # caught up and live for a while: slower
        closed_in_time = await _served(hub, second, scorer, 25)
        await hub.close()
        return second if closed_in_time else None

    second = asyncio.run(run())
    assert second is not None, "still open 25 s after the resume: its bound stayed at the outage's lag"
    assert [e for e in second.events if e["type"] == "score"]  # the backlog was scored
    assert _overloaded_limit_s(second) <= 3  # max_ahead_s and the lag it had caught up to (rounded)
