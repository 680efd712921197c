"""A stream's drain after a disconnect: chunks accepted at receipt but not processed in time are given back.

Without this a resume's `started.next_seq` pointed past chunks the server had dropped, so the client never
resent them and their audio vanished from the stream without a word.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest
from support.stream_session import TICK, Socket, audio, hub, open_stream, run

from avpenet import contract
from preprocess_service.stream.inbound import Item
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import CLOSE_INTERNAL, CLOSE_LOST, Start, encode_chunk
from preprocess_service.stream.registry import StreamRegistry, resume_events
from preprocess_service.stream.session import BATCH_ITEMS, Session

CHUNK = contract.SAMPLE_RATE // 20  # 0.05 s: 40 chunks are 2 s, short of a window (nothing to score)


class _Counter:
    def labels(self, *_: str) -> _Counter:
        return self

    def inc(self, *_: float) -> None:
        pass


def _session() -> Session:
    reg = StreamRegistry(StreamLimits(), 10**7)
    start = Start(type="start", mode="audio", age_group="adult")
    entry, _ = reg.acquire(start, "stream-drain1", "key-1")
    hub = SimpleNamespace(registry=reg, metrics=SimpleNamespace(events=_Counter(), dropped=_Counter()))
    session = Session(None, hub, entry, resumed=False)
    session.connected = False  # the client has gone: events are only recorded, for a resume
    wave = np.zeros(CHUNK, "<f4").tobytes()
    for seq in range(40):
        session._chunk(encode_chunk({"kind": "audio", "seq": seq, "rate": contract.SAMPLE_RATE}, wave))
    session._enqueue(Item("handling", {"type": "handling", "active": True}, None, time.monotonic()))
    session._enqueue(Item("stop", {}, None, time.monotonic()))
    return session


def _drain(session: Session, deadline_after_batches: int | None) -> None:
    """Run the processor as `run()` does after a disconnect; the deadline passes after N batches."""
    process, batches = session._process, []

    def counted(batch: list[Item], live: bool):
        batches.append(len(batch))
        if deadline_after_batches is not None and len(batches) >= deadline_after_batches:
            session.drain_by = time.monotonic() - 1.0
        return process(batch, live)

    session._process = counted
    session.drain_by = time.monotonic() + 3600.0
    asyncio.run(session._processor())


def test_chunks_left_at_the_drain_deadline_are_asked_for_again_on_resume():
    session = _session()
    received_before = session.entry.received_s["audio"]
    _drain(session, deadline_after_batches=1)
    state, left = session.state, 40 - BATCH_ITEMS
    assert state.next_seq["audio"] == BATCH_ITEMS  # was 40: a resume would have skipped the last 8
    assert state.n_samples == BATCH_ITEMS * CHUNK
    given_back_s = left * CHUNK / contract.SAMPLE_RATE
    assert np.isclose(session.entry.received_s["audio"], received_before - given_back_s)
    assert session.monitor.handling.periods == [(state.media_s, None)]  # the handling mark was not lost
    (event,) = [e for e in session.entry.events if e.get("code") == "not_processed"]
    assert event["audio"] == left and event["frame"] == 0 and "next_seq" in event["detail"]
    started, replay = resume_events(session.entry, True, last_event=-1)
    assert started["next_seq"]["audio"] == BATCH_ITEMS and event in replay


def test_a_drain_within_the_deadline_processes_everything_and_says_nothing():
    session = _session()
    _drain(session, deadline_after_batches=None)
    assert session.state.next_seq["audio"] == 40 and session.state.n_samples == 40 * CHUNK
    assert not [e for e in session.entry.events if e.get("code") == "not_processed"]


def test_a_batch_outliving_the_drain_is_awaited_not_cancelled(monkeypatch):
    """Cancelling the processor would leave its worker thread using the state (and a video stream's tracker)
    while the stream is detached, resumed or closed."""
    import threading

    from preprocess_service.stream import session as session_module

    monkeypatch.setattr(session_module, "DRAIN_TIMEOUT_S", 0.01)
    monkeypatch.setattr(session_module, "DRAIN_GRACE_S", 0.05)
    session = _session()
    process, finished = session._process, threading.Event()

    def slow(batch: list[Item], live: bool):
        time.sleep(0.5)  # well past timeout + grace
        out = process(batch, live)
        finished.set()
        return out

    class GoneClient:
        async def receive(self) -> dict:
            return {"type": "websocket.disconnect", "code": 1006}

    session.ws, session._process = GoneClient(), slow
    asyncio.run(session.run())
    assert finished.is_set()  # run() returned only after the batch's thread was done with the state
    assert session.state.next_seq["audio"] == BATCH_ITEMS and session.state.n_samples == BATCH_ITEMS * CHUNK


def test_a_live_stream_drops_frames_late_for_a_due_score_never_audio_and_only_then():
    """Tracking behind real time (more video streams than the replica's CPUs track): a frame 1 s behind real
    time that has waited that long by its turn while a score waits on it is dropped unread, so scores stay
    near real time instead of falling further behind (stream-bench, 12 video streams on 2 cores: lag p99
    6.0 s before). Nothing is dropped for a backlog before any window is due (streams opening at once), for
    a sender ahead of real time (a recording replayed fast), or while draining."""
    from support.gateway import face_track

    from preprocess_service.stream.protocol import landmark_frame_bytes

    def processed(received_s: float, opened_ago_s: float, live: bool = True) -> tuple[Session, int]:
        reg = StreamRegistry(StreamLimits(max_frame_wait_s=1.0), 10**7)
        start = Start(type="start", mode="landmarks", age_group="adult", image_size=[640, 480])
        entry, _ = reg.acquire(start, "stream-late1", "key-1")
        entry.received_s.update(audio=received_s, frame=received_s)  # media the receiver has taken in
        track, now = face_track(1.0), time.monotonic()
        entry.opened_at = now - opened_ago_s
        session = Session(None, SimpleNamespace(registry=reg), entry, resumed=False)
        wave = np.zeros(contract.SAMPLES_PER_FRAME, "<f4").tobytes()
        batch = []
        for i, age in enumerate((2.0, 1.1, 0.9, 0.1)):  # frames 0-3: media 0.0-0.3 s
            audio = {"kind": "audio", "seq": i, "rate": contract.SAMPLE_RATE}
            batch.append(Item("audio", audio, wave, now - age))
            batch.append(
                Item("frame", {"kind": "frame", "seq": i}, landmark_frame_bytes(track, i), now - age)
            )
        ready, errors, late = session._process(batch, live)
        assert not ready and not errors
        assert session.state.n_samples == 4 * contract.SAMPLES_PER_FRAME  # all the audio, late or not
        return session, late

    window = contract.WINDOW_SECONDS
    behind, late = processed(received_s=window, opened_ago_s=10.0)  # a window is due, media 10 s old
    assert late == 2
    assert [bool(f.face_present[0]) for f in behind.state.frames] == [False, False, True, True]
    for case in (
        {"received_s": window - 0.5, "opened_ago_s": 10.0},  # no window due yet
        {"received_s": window, "opened_ago_s": 0.0},  # sent ahead of real time
        {"received_s": window, "opened_ago_s": 10.0, "live": False},  # draining
    ):
        kept, late = processed(**case)
        assert late == 0 and [bool(f.face_present[0]) for f in kept.state.frames] == [True] * 4, case


class _Socket:
    """A WebSocket that delivers `messages`, then waits; it records what was sent and how it was closed."""

    def __init__(self, messages: list[dict]) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        for message in messages:
            self.inbox.put_nowait(message)
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> dict:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def test_a_processing_failure_closes_1011_and_gives_the_queue_back():
    """A bug in processing used to raise out of `run`: no 1011 close, and the chunks still queued were
    neither processed nor given back, so a resume never resent them."""
    reg = StreamRegistry(StreamLimits(), 10**7)
    entry, _ = reg.acquire(Start(type="start", mode="audio", age_group="adult"), "stream-crash1", "key-1")
    hub = SimpleNamespace(registry=reg, metrics=SimpleNamespace(events=_Counter(), dropped=_Counter()))
    wave = np.zeros(CHUNK, "<f4").tobytes()
    header = {"kind": "audio", "rate": contract.SAMPLE_RATE}
    ws = _Socket(
        [{"type": "websocket.receive", "bytes": encode_chunk({**header, "seq": k}, wave)} for k in range(40)]
    )
    session = Session(ws, hub, entry, resumed=False)

    def broken(batch: list[Item], live: bool):
        raise RuntimeError("a bug in processing")

    session._process = broken
    code = asyncio.run(asyncio.wait_for(session.run(), 60))
    assert code == CLOSE_INTERNAL and ws.closed is not None and ws.closed[0] == CLOSE_INTERNAL
    (event,) = [e for e in entry.events if e.get("code") == "not_processed"]
    assert any('"fatal":true' in text for text in ws.sent)  # told before the close...
    assert not any(e.get("fatal") for e in entry.events)  # ...and not replayed: a resume would end on it
    started, _ = resume_events(entry, True, last_event=-1)  # a resume asks for the queued chunks again
    assert event["audio"] > 0 and started["next_seq"]["audio"] == entry.state.next_seq["audio"] < 40


def test_a_handler_serve_cancels_is_drained_like_a_lost_link():
    """At its request timeout Serve cancels the handler: `run` stopped at once, leaving its receiver,
    processor and sender running (a worker thread still changing the state a resume then held) and the
    chunks queued neither processed nor given back."""
    reg = StreamRegistry(StreamLimits(), 10**7)
    entry, _ = reg.acquire(Start(type="start", mode="audio", age_group="adult"), "stream-cancel1", "key-1")
    hub = SimpleNamespace(registry=reg, metrics=SimpleNamespace(events=_Counter(), dropped=_Counter()))
    wave = np.zeros(CHUNK, "<f4").tobytes()
    header = {"kind": "audio", "rate": contract.SAMPLE_RATE}
    chunks = [encode_chunk({**header, "seq": k}, wave) for k in range(40)]
    session = Session(_Socket([{"type": "websocket.receive", "bytes": c} for c in chunks]), hub, entry, False)
    process = session._process

    def slow(batch: list[Item], live: bool):
        time.sleep(0.05)
        return process(batch, live)

    session._process = slow

    async def cancelled_mid_stream() -> list[asyncio.Task]:
        task = asyncio.create_task(session.run())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(cancelled_mid_stream()) == []  # nothing of the session still runs
    processed = entry.state.n_samples // CHUNK
    assert session.close_code == CLOSE_LOST and entry.state.next_seq["audio"] == processed  # the rest: resent


def test_a_failure_midway_through_a_batch_gives_back_the_batch_from_the_chunk_it_failed_on():
    """A bug on audio chunk 45: before, the 32-chunk batch it was in was lost (chunks 45-63 neither
    processed nor given back: the resume asked from 64) and the event blamed the drain's 30 s. Now every
    chunk read from 45 on is given back, the event says the server failed, and the window the batch
    completed before the failure is scored."""
    the_hub = hub()
    entry = open_stream(the_hub, "stream-crash2")
    add_audio = entry.state.add_audio

    def buggy(header: dict, payload: memoryview) -> None:
        if header["seq"] == 45:
            raise RuntimeError("a bug in processing")
        add_audio(header, payload)

    entry.state.add_audio = buggy
    socket = Socket([audio(k) for k in range(100)])
    assert run(the_hub, entry, socket) == CLOSE_INTERNAL
    (event,) = [e for e in entry.events if e.get("code") == "not_processed"]
    read = 100 - len(socket.messages)  # the receiver stops at the close
    assert event["audio"] == read - 45 > 0
    assert "server failed" in event["detail"] and "30 s" not in event["detail"]
    assert entry.state.next_seq["audio"] == 45 and entry.state.n_samples == 45 * TICK
    assert [e["window"] for e in entry.events if e["type"] == "score"] == [0, 1]  # 1 ends at chunk 40
