"""A stream's receiving side (session.Session's; the flow-control policy is stated in session.py): each
message read, checked and queued for the processor, or refused with an error event, or the stream closed
(stalled, flooding, unreadable)."""

from __future__ import annotations

import asyncio
import time

from preprocess_service.stream import pause
from preprocess_service.stream.inbound import Item, ahead_s
from preprocess_service.stream.limits import STUCK_S
from preprocess_service.stream.protocol import (
    CLOSE_GARBAGE,
    CLOSE_LOST,
    CLOSE_SLOW_CONSUMER,
    CLOSE_STALLED,
    StreamRejected,
    parse_chunk,
    parse_control,
)

GARBAGE_LIMIT = 20  # consecutive unreadable messages before the stream is closed 4415


class Receiving:
    """The Session's receiver (a mixin: it uses the session's ws, entry, state, limits, inbound, emit, fail,
    _enqueue)."""

    async def _receiver(self) -> None:
        garbage = 0
        stall = self.limits.stall_timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), stall)
            except TimeoutError:
                reason = f"no data for {stall:g} s; reconnect with the stream id to resume"
                return self.fail(CLOSE_STALLED, reason, "stalled")
            except Exception:  # noqa: BLE001 (the connection broke)
                msg = {"type": "websocket.disconnect"}
            if msg["type"] == "websocket.disconnect":
                self.connected = False
                self.close_code, self.close_reason = int(msg.get("code") or CLOSE_LOST), "client disconnected"
                return self.done.set()
            try:
                if msg.get("bytes") is not None:
                    self._chunk(msg["bytes"])
                elif msg.get("text") is not None:
                    control = parse_control(msg["text"])
                    self._enqueue(Item(control["type"], control, None, time.monotonic()))
                    if control["type"] == "end":
                        return
                garbage = 0
                if self.done.is_set():  # closed by the flow control
                    return
                if self.inbound.full() and (why := await self.inbound.room(STUCK_S, self.entry)):  # bounded
                    return self.fail(CLOSE_SLOW_CONSUMER, why, "overloaded")
            except StreamRejected as exc:
                self.emit({"type": "error", "code": exc.code, "detail": exc.detail})
                garbage = garbage + 1 if exc.code == "garbage" else 0
                if garbage >= GARBAGE_LIMIT:
                    self.entry.finished = True  # nothing worth resuming
                    return self.fail(CLOSE_GARBAGE, f"{garbage} unreadable messages in a row", "garbage")

    def _chunk(self, data: bytes) -> None:
        header, payload = parse_chunk(data)
        self.state.check_seq(header["kind"], header["seq"])
        self._pace(header, len(payload))
        pause.chunk_read(self.entry)
        self._enqueue(Item(header["kind"], header, bytes(payload), time.monotonic()))

    def _pace(self, header: dict, size: int) -> None:
        """Close a stream whose media runs more than `max_ahead_s` ahead of the wall clock (a flood)."""
        e, limit = self.entry, self.limits.max_ahead_s
        ahead = ahead_s(e.received_s, header, size, e.start.sample_rate, e.opened_at)
        if ahead > limit:
            reason = (
                f"media arrives {ahead:.0f} s ahead of real time (limit {limit:g} s); stream at real time"
            )
            self.fail(CLOSE_SLOW_CONSUMER, reason, "too_fast")
