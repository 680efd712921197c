"""A monitoring stream's Session without a server: a scripted socket, a hub with a fake Triton, messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from avpenet import contract
from preprocess_service.stream import state as state_module
from preprocess_service.stream.checkpoints import LocalCheckpoints
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import Start, encode_chunk
from preprocess_service.stream.registry import Entry, StreamRegistry
from preprocess_service.stream.session import Session

TICK = contract.SAMPLES_PER_FRAME  # 0.1 s of 16 kHz audio


class Metric:
    """Any Prometheus metric, counting nothing."""

    def labels(self, *_: str) -> Metric:
        return self

    def inc(self, *_: float) -> None:
        pass

    def observe(self, *_: float) -> None:
        pass


class Triton:
    """Answers `score` for every window, or raises ConnectionError while `down`."""

    def __init__(self, score: float = 3.0) -> None:
        self.score, self.down, self.calls = score, False, 0

    async def infer(self, inputs: dict, request_id: str | None = None) -> SimpleNamespace:
        self.calls += 1
        if self.down:
            raise ConnectionError("Triton is down")
        n = len(inputs[contract.AGE_GROUP.name])
        outputs = {
            contract.SCORE.name: np.full((n, 1), self.score, np.float32),
            contract.INTERVAL.name: np.tile(np.array([[self.score - 1, self.score + 1]], np.float32), (n, 1)),
            contract.MODALITY_WEIGHTS.name: np.full((n, 2), 0.5, np.float32),
        }
        return SimpleNamespace(outputs=outputs, model_version="1")


class Socket:
    """Delivers `messages` (a callable is called for its message when its turn comes), `pace_s` apart, then
    waits; records the events sent (as dicts) and the close."""

    def __init__(self, messages: list, pace_s: float = 0.0) -> None:
        self.messages, self.pace_s = list(messages), pace_s
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> dict:
        await asyncio.sleep(self.pace_s)
        if not self.messages:
            await asyncio.Event().wait()
        message = self.messages.pop(0)
        return message() if callable(message) else message

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    def errors(self, code: str) -> list[dict]:
        return [e for e in self.sent if e["type"] == "error" and e["code"] == code]


def hub(limits: StreamLimits | None = None, triton: Triton | None = None) -> SimpleNamespace:
    registry = StreamRegistry(limits or StreamLimits(), 10**7)
    watchdog = SimpleNamespace(ensure_started=lambda: None)
    service = SimpleNamespace(triton=triton or Triton(), watchdog=watchdog)
    metrics = SimpleNamespace(events=Metric(), dropped=Metric(), lag=Metric())
    checkpoints = LocalCheckpoints(60)
    return SimpleNamespace(registry=registry, service=service, metrics=metrics, checkpoints=checkpoints)


def open_stream(the_hub: SimpleNamespace, sid: str = "stream-unit-1", **start) -> Entry:
    fields = {"type": "start", "mode": "audio", "age_group": "adult", **start}
    entry, _ = the_hub.registry.acquire(Start(**fields), sid, "key-1")
    return entry


def run(the_hub: SimpleNamespace, entry: Entry, socket: Socket, timeout_s: float = 60.0) -> int:
    """Serve `socket` on `entry` until the stream closes; its close code."""
    session = Session(socket, the_hub, entry, resumed=False)
    return asyncio.run(asyncio.wait_for(session.run(), timeout_s))


def audio(seq: int, value: float = 0.01, n: int = TICK) -> dict:
    header = {"kind": "audio", "seq": seq, "rate": contract.SAMPLE_RATE}
    return {"type": "websocket.receive", "bytes": encode_chunk(header, np.full(n, value, "<f4").tobytes())}


def frame(header: dict, payload: bytes) -> dict:
    return {"type": "websocket.receive", "bytes": encode_chunk({"kind": "frame", **header}, payload)}


def text(message: dict) -> dict:
    return {"type": "websocket.receive", "text": json.dumps(message)}


def connect(
    the_hub: SimpleNamespace, entry: Entry, messages: list, resumed: bool, last_event: int = -1
) -> tuple[int, Socket]:
    """One connection of `entry`'s stream: its close code and the socket (the events it got)."""
    socket = Socket(messages)
    session = Session(socket, the_hub, entry, resumed=resumed, last_event=last_event)
    return asyncio.run(asyncio.wait_for(session.run(), 60)), socket


def resume(the_hub: SimpleNamespace, entry: Entry, socket: Socket, **start) -> int:
    """Detach the stream as the route does at a close, and reconnect with the last event `socket` received
    (audio mode unless `start` says otherwise); that event's seq."""
    the_hub.registry.detach(entry)
    last = max((e["seq"] for e in socket.sent if "seq" in e), default=entry.event_seq - 1)  # none on it
    fields = {"type": "start", "mode": "audio", "age_group": "adult", "last_event": last, **start}
    again, resumed = the_hub.registry.acquire(Start(**fields), entry.stream_id, entry.key_id)
    assert resumed and again is entry
    return last


def failing_audio(monkeypatch, fails: Callable[[int], bool]) -> list[int]:
    """The feature code raises on every audio chunk whose seq `fails` (a bug its content triggers); the seqs
    it raised on, in order."""
    wave, failed = state_module.audio_wave, []

    def buggy(header: dict, payload: memoryview, rate: int):
        if fails(header["seq"]):
            failed.append(header["seq"])
            raise RuntimeError("a bug in the feature code")
        return wave(header, payload, rate)

    monkeypatch.setattr(state_module, "audio_wave", buggy)
    return failed
