"""The bounded queue between a stream's receiver and its processor, and the real-time pacing check.

Policy (stated in session.py): beyond `max_pending_bytes` the OLDEST queued frames are dropped unread (each
becomes a frame without a face, so the timeline holds), and so is a live stream's frame that is
`max_frame_wait_s` behind real time by its turn while a score waits on it (`late`); audio is never dropped.
While a bound is still passed after that (`full()`: the items, or the bytes with no frame left to drop) the
receiver reads nothing more until the processor has taken a batch (`room()`, back-pressure): a device's
resend of the minute it buffered during an outage is queued, not refused. The pause is bounded by how far
the stream's processing may fall behind the wall clock (pause.py): a stream processed slower than real time
is closed 4409 `overloaded`, its media not left piling up unread in Serve's proxy. `ahead_s()` is how far the
media received runs ahead of the wall clock since the stream opened: Serve's HTTP proxy buffers a
WebSocket's incoming messages without backpressure, so closing a flooding sender at once is what bounds the
proxy's memory. `give_back()` un-accepts the chunks a drain did not process in time, so a resume resends
them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from avpenet import contract
from preprocess_service.stream.limits import DRAIN_TIMEOUT_S, StreamLimits
from preprocess_service.stream.pause import processed_behind_s
from preprocess_service.stream.protocol import frame_time

if TYPE_CHECKING:
    from preprocess_service.stream.registry import Entry

log = logging.getLogger("avpenet.gateway.stream")


@dataclass
class Item:
    kind: str  # audio | frame | dropped | handling | end | stop
    header: dict
    payload: bytes | None
    arrived: float


class Inbound:
    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self.items: deque[Item] = deque()
        self.bytes = 0
        self.dropped = 0  # frames dropped since the last take()
        self.taken = asyncio.Event()  # set by take(): a receiver waiting for room looks again

    def put(self, item: Item) -> None:
        self.items.append(item)
        self.bytes += len(item.payload or b"")
        for old in self.items:  # over the byte bound: the oldest frames go first
            if self.bytes <= self.limits.max_pending_bytes:
                break
            if old.kind == "frame":
                self.bytes -= len(old.payload or b"")
                old.kind, old.payload = "dropped", None
                self.dropped += 1

    def late(self, item: Item, entry: Entry, next_window: int) -> bool:
        """Whether a live stream's frame is dropped unread when its turn comes: it is `max_frame_wait_s`
        behind real time (its media time since the stream opened) and has waited that long in this queue,
        while a score waits on it (the media received has passed the end of the next window). The stream's
        tracking is then behind, with more video than the replica's CPUs track, and tracking the frame late
        would leave it further behind. A sender ahead of real time (a recording replayed fast) and a backlog
        before any window is due (streams opening at once) cost no score its time: nothing is dropped."""
        t = frame_time(item.header)
        media_s = item.header["seq"] / contract.FPS if t is None else t
        behind_s = time.monotonic() - max(item.arrived, entry.opened_at + media_s)
        due_s = contract.window_end_s(next_window)
        return behind_s >= self.limits.max_frame_wait_s and max(entry.received_s.values()) >= due_s

    def full(self) -> bool:
        """Over the item bound, or the byte bound with no frame left to drop: the receiver stops reading."""
        return self.bytes > self.limits.max_pending_bytes or len(self.items) > self.limits.max_pending_items

    async def room(self, stuck_s: float, entry: Entry) -> str | None:
        """Wait until the processor has brought the queue back within its bounds: None, or why the stream is
        closed 4409 instead. While the receiver waits, what the sender goes on sending piles up unread in
        Serve's proxy (no back-pressure there), so the wait is only for a backlog the stream may have: its
        processing at most `entry.behind_max_s` behind the wall clock (pause.py).
        A stream processed slower than real time (a slow Triton) is still taken from now and then, so only
        this bound stops its lag and the proxy's buffer growing as long as it runs; `stuck_s` with nothing
        taken: the processor hangs."""
        while self.full():
            if (lag := processed_behind_s(entry)) > (bound_s := entry.behind_max_s):
                return (
                    "the service cannot keep up with this stream in real time: its processing is "
                    f"{lag:.0f} s behind (limit {bound_s:.0f} s); add scoring capacity or send fewer streams"
                )
            self.taken.clear()
            try:
                await asyncio.wait_for(self.taken.wait(), stuck_s)
            except TimeoutError:
                return f"none of this stream's chunks was processed for {stuck_s:g} s (overloaded)"
        return None

    def put_back(self, items: list[Item]) -> None:
        """Return items taken but not processed to the head of the queue, in their order."""
        self.items.extendleft(reversed(items))
        self.bytes += sum(len(i.payload or b"") for i in items)

    def take(self, n: int) -> list[Item]:
        batch = [self.items.popleft() for _ in range(min(n, len(self.items)))]
        self.bytes -= sum(len(i.payload or b"") for i in batch)
        self.taken.set()
        return batch


def header_rate(header: dict, default_rate: int) -> int:
    """An audio chunk's rate as its header names it, or the stream's when it names none (a bool is none)."""
    rate = header.get("rate")
    return rate if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0 else default_rate


def chunk_s(header: dict, size: int, default_rate: int) -> float:
    """Media seconds a chunk of `size` payload bytes carries (float32 audio at its rate, or one frame)."""
    if header["kind"] == "audio":
        return size / 4 / header_rate(header, default_rate)
    return 1 / contract.FPS


def ahead_s(received_s: dict, header: dict, size: int, default_rate: int, opened_at: float) -> float:
    """Count a chunk into `received_s` (media seconds per kind); seconds the media runs ahead of real time.
    A frame's capture time counts as far as it reaches (a jump is media the stream claims to hold); one that
    is not a time is refused here (StreamRejected, nothing counted; the receiver checks it first and counts
    the frame without its time)."""
    kind = "audio" if header["kind"] == "audio" else "frame"
    t = frame_time(header) if kind == "frame" else None
    received_s[kind] += chunk_s(header, size, default_rate)
    if t is not None:
        received_s[kind] = max(received_s[kind], t + 1 / contract.FPS)
    return max(received_s.values()) - (time.monotonic() - opened_at)


CHUNK_ITEMS = ("audio", "frame", "dropped")  # the items a chunk made: their seqs were accepted at receipt


def unaccept(items: list[Item], next_seq: dict, received_s: dict, default_rate: int) -> dict[str, int]:
    """Give back chunks accepted at receipt but never processed: `next_seq` returns to the first of each kind
    (a resume then asks for them again) and `received_s` forgets them (the resend is not a flood). Returns how
    many of each kind."""
    count = {"audio": 0, "frame": 0}
    for item in items:
        kind = "frame" if item.kind == "dropped" else item.kind  # a dropped frame was accepted too
        if kind not in count:
            continue  # control messages carry no seq
        if not count[kind]:
            next_seq[kind] = item.header["seq"]
        count[kind] += 1
        size = 0 if item.payload is None else len(item.payload)
        received_s[kind] -= chunk_s(item.header, size, default_rate)  # a dropped frame's header says frame
        if kind == "frame" and (t := frame_time(item.header)) is not None:  # back to before its capture time
            received_s[kind] = min(received_s[kind], t)
    return count


def give_back(inbound: Inbound, entry: Entry, failed: bool = False) -> dict | None:
    """Un-accept the chunks still queued in `inbound` at the drain deadline, or once the processing `failed`;
    the `not_processed` error event that tells the client to resend them, or None when there were none. Their
    `handling` marks still apply, at the media time processed so far (so a period starts early rather than
    being lost)."""
    left = inbound.take(len(inbound.items))
    for item in left:
        if item.kind == "handling":
            entry.monitor.handling.set(item.header["active"], entry.state.media_s)
    n = unaccept(left, entry.state.next_seq, entry.received_s, entry.start.sample_rate)
    ended = any(i.kind == "end" for i in left)
    if not (n["audio"] or n["frame"] or ended):
        return None
    why = "the server failed processing this stream" if failed else f"not within {DRAIN_TIMEOUT_S:g} s"
    detail = (
        f"{n['audio']} audio and {n['frame']} frame chunks were received but not processed ({why}); resume "
        f"and resend from next_seq {entry.state.next_seq}" + (", then end again" if ended else "")
    )
    first = next(((i.header["kind"], i.header["seq"]) for i in left if i.kind in CHUNK_ITEMS), None)
    if failed and first is not None and first == entry.failed_chunk:  # poison.py
        detail += f"; {first[0]} chunk {first[1]}, which it failed on, is refused if it fails again"
    log.warning("stream %s: %s", entry.stream_id, detail)
    return {"type": "error", "code": "not_processed", **n, "detail": detail}
