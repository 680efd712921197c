"""A stream's receiving side (session.Session's; the flow-control policy is stated in session.py): each
message read, checked and queued for the processor, or refused with an error event, or the stream closed
(stalled, flooding, unreadable)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from preprocess_service.stream import pause
from preprocess_service.stream.frames import check_size
from preprocess_service.stream.inbound import Item, ahead_s
from preprocess_service.stream.limits import STUCK_S
from preprocess_service.stream.protocol import (
    CLOSE_GARBAGE,
    CLOSE_LOST,
    CLOSE_SLOW_CONSUMER,
    CLOSE_STALLED,
    FRAME_TIME,
    StreamRejected,
    frame_time,
    parse_chunk,
    parse_control,
)

if TYPE_CHECKING:
    from preprocess_service.stream.registry import Entry

GARBAGE_LIMIT = 20  # consecutive unreadable messages before the stream is closed 4415
# Text control messages a connection may send: CONTROL_BURST, and CONTROLS_PER_S more for each second of wall
# time or of media received since it opened (whichever is more: a resend after an outage brings its marks).
# Handling changes a few times an hour; a client toggling it thousands of times a second grew the stream's
# handling periods, and each checkpoint's copy of them, without bound. `end` is not counted: it is the last
# message (sent after the budget was spent, it closed the stream 4409 instead of ending it).
CONTROL_BURST = 20
CONTROLS_PER_S = 2.0


class ControlBudget:
    def __init__(self, entry: Entry) -> None:
        self.entry, self.spent = entry, 0
        self.opened_at, self.media_at_open = time.monotonic(), max(entry.received_s.values())

    def spend(self) -> str | None:
        """Count one control message: None, or why the stream is closed 4409 `control_flood`."""
        self.spent += 1
        media_s = max(self.entry.received_s.values()) - self.media_at_open
        span_s = max(time.monotonic() - self.opened_at, media_s)
        if self.spent <= CONTROL_BURST + CONTROLS_PER_S * span_s:
            return None
        return (
            f"{self.spent} control messages in {span_s:.0f} s (limit {CONTROL_BURST} and "
            f"{CONTROLS_PER_S:g} a second); send handling only when it changes"
        )


class Receiving:
    """The Session's receiver (a mixin: it uses the session's ws, entry, state, limits, inbound, emit, fail,
    _enqueue)."""

    async def _receiver(self) -> None:
        garbage, controls = 0, ControlBudget(self.entry)
        heard = time.monotonic()  # the last chunk accepted (Entry.read_at), the opening or a pause's end
        while True:
            heard = max(heard, self.entry.read_at)
            if (msg := await self._read(heard)) is None:
                return
            if msg["type"] == "websocket.disconnect":
                self.connected = False
                self.close_code, self.close_reason = int(msg.get("code") or CLOSE_LOST), "client disconnected"
                return self.done.set()
            try:
                if msg.get("bytes") is not None:
                    self._chunk(msg["bytes"])
                elif msg.get("text") is not None:
                    control = parse_control(msg["text"])
                    if control["type"] != "end" and (why := controls.spend()):  # the last one: let through
                        return self.fail(CLOSE_SLOW_CONSUMER, why, "control_flood")
                    self._enqueue(Item(control["type"], control, None, time.monotonic()))
                    if control["type"] == "end":
                        return
                garbage = 0
                if self.done.is_set():  # closed by the flow control
                    return
                if self.inbound.full():  # bounded (inbound.room); the pause is not the sender's silence
                    if why := await self.inbound.room(STUCK_S, self.entry):
                        return self.fail(CLOSE_SLOW_CONSUMER, why, "overloaded")
                    heard = time.monotonic()
            except StreamRejected as exc:
                self.emit({"type": "error", "code": exc.code, "detail": exc.detail})
                garbage = garbage + 1 if exc.code == "garbage" else 0
                if garbage >= GARBAGE_LIMIT:  # its state is kept for a resume (an alert that is on included)
                    why = f"{garbage} unreadable messages in a row; the stream can be resumed"
                    return self.fail(CLOSE_GARBAGE, why, "garbage")

    async def _read(self, heard: float) -> dict | None:
        """The next message, or None once no chunk has been accepted for `stall_timeout_s` since `heard` (the
        stream is closed 4408): only media keeps a stream open, not text (a client toggling `handling` or
        sending anything else held its slot, and its replica's request slot, for ever)."""
        stall = self.limits.stall_timeout_s
        try:
            if (left := heard + stall - time.monotonic()) <= 0:
                raise TimeoutError
            return await asyncio.wait_for(self.ws.receive(), left)
        except TimeoutError:
            reason = f"no audio or frame chunk for {stall:g} s; reconnect with the stream id to resume"
            self.fail(CLOSE_STALLED, reason, "stalled")
            return None
        except Exception:  # noqa: BLE001 (the connection broke)
            return {"type": "websocket.disconnect"}

    def _chunk(self, data: bytes) -> None:
        """Accept a chunk (its seq) and queue it. A frame refused on receipt (a `t` that is not a time, a size
        its mode cannot have) keeps its time all the same: a frame without a face in its `t` slot or the next
        one, as the flow control drops frames; its payload is not queued."""
        header, payload = parse_chunk(data)
        self.state.check_seq(header["kind"], header["seq"])
        if header["kind"] == "frame":
            kept = {"kind": "frame", "seq": header["seq"]}
            try:
                if frame_time(header) is not None:
                    kept[FRAME_TIME] = header[FRAME_TIME]
                check_size(header, len(payload), self.entry.start.mode, self.state.max_pixels)
            except StreamRejected:
                self._accept(kept, None)
                raise
        self._accept(header, payload)

    def _accept(self, header: dict, payload: memoryview | None) -> None:
        """Count a chunk toward the pacing and queue it (`dropped`: a frame without a face, no payload)."""
        self._pace(header, 0 if payload is None else len(payload))
        pause.chunk_read(self.entry)
        kind, data = ("dropped", None) if payload is None else (header["kind"], bytes(payload))
        self._enqueue(Item(kind, header, data, time.monotonic()))

    def _pace(self, header: dict, size: int) -> None:
        """Close a stream whose media runs more than `max_ahead_s` ahead of the wall clock (a flood)."""
        e, limit = self.entry, self.limits.max_ahead_s
        ahead = ahead_s(e.received_s, header, size, e.start.sample_rate, e.opened_at)
        if ahead > limit:
            reason = (
                f"media arrives {ahead:.0f} s ahead of real time (limit {limit:g} s); stream at real time, "
                f"a frame's {FRAME_TIME!r} in seconds since this stream's start (from 0 again after a "
                "resume whose started.resumed is false)"
            )
            self.fail(CLOSE_SLOW_CONSUMER, reason, "too_fast")
