"""One monitoring connection: receive → bounded queue → processing (a worker thread) → Triton → events.

The receiver checks and queues each message; the processor feeds the state on a worker thread and scores the
windows completed (one ensemble call for all ready), the sender writes events out. Flow control (policy):
- inbound: a queue bounded by `max_pending_bytes` and `max_pending_items`. Beyond the bytes the OLDEST queued
  frames are dropped unread (faceless frames, so the timeline holds; event `frames_dropped`), as is a live
  stream's frame `max_frame_wait_s` behind real time while a score waits on it (Inbound.late); with only
  audio left to drop, or beyond the items, the receiver reads no more until processing has caught up
  (back-pressure: a resend after an outage is taken; audio is never dropped), while the processing is at most
  `Entry.behind_max_s` behind real time (else 4409 `overloaded`: it cannot keep up) and takes a batch per
  STUCK_S.
- pacing: media over `max_ahead_s` ahead of the wall clock since the opening (a resume may catch up its gap)
  closes 4409 `too_fast` (Serve's proxy reads WebSocket messages without backpressure). outbound: at most
  `max_queued_events` unsent (a client not reading: 4409). stall: no chunk accepted for `stall_timeout_s`
  (text does not count): 4408. controls: at most receiving.CONTROL_BURST + CONTROLS_PER_S a second (`end`
  aside), else 4409.
- drain: after a close, a disconnect or Serve ending the handler, queued chunks are processed up to
  `DRAIN_TIMEOUT_S`; the rest are given back (`next_seq`, `not_processed`) to be resent; on a 1011 (the
  processing failed) every chunk not processed, from the one it failed on, once per stream: a chunk that
  fails after that is refused, its time kept, and the stream goes on; 10 of one kind failing in a row end
  it, 4500 (poison.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from avpenet.errors import InputError
from preprocess_service import errors
from preprocess_service.stream import pause, poison
from preprocess_service.stream.inbound import Inbound, Item, give_back
from preprocess_service.stream.limits import DRAIN_TIMEOUT_S
from preprocess_service.stream.protocol import (
    CHUNK_KINDS,
    CLOSE_INTERNAL,
    CLOSE_LOST,
    CLOSE_NORMAL,
    CLOSE_SLOW_CONSUMER,
    CLOSE_UNPROCESSABLE,
    StreamRejected,
)
from preprocess_service.stream.receiving import Receiving
from preprocess_service.stream.registry import Entry, resume_events
from preprocess_service.stream.scoring import score_windows
from preprocess_service.stream.state import ReadyWindow

log = logging.getLogger("avpenet.gateway.stream")
BATCH_ITEMS = 32  # queued chunks processed per worker-thread hop
DRAIN_GRACE_S = 30.0  # then an error is logged for the batch still under way (it is awaited all the same)
Ready = list[tuple[ReadyWindow, float]]  # windows completed, each with its last chunk's arrival time


class Session(Receiving):
    def __init__(self, ws, hub, entry: Entry, resumed: bool, last_event: int = -1) -> None:
        self.ws, self.hub, self.entry, self.resumed, self.last_event = ws, hub, entry, resumed, last_event
        self.limits = hub.registry.limits
        self.state, self.monitor = entry.state, entry.monitor
        self.inbound = Inbound(self.limits)
        self.wake = asyncio.Event()
        self.done = asyncio.Event()
        self.out: asyncio.Queue = asyncio.Queue(self.limits.max_queued_events)
        self.close_code, self.close_reason = CLOSE_NORMAL, "stream ended"
        self.connected = True
        self.drain_by: float | None = None  # set when the stream ends: queued chunks past it are given back
        self.notes: list[dict] = []  # per-connection notices sent right after `started` (not replayed)
        self.fed, self.made = 0, ([], [])  # the batch being processed: items done, (windows, errors) made
        pause.behind_bound(entry, resumed, self.limits.max_ahead_s)  # the lag the back-pressure pause allows

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def run(self) -> int:
        """Serve the connection until it ends; returns the close code."""
        sender = asyncio.create_task(self._sender())
        processor = asyncio.create_task(self._processor(), name="processor")
        processor.add_done_callback(self._task_died)
        self._started()
        receiver = asyncio.create_task(self._receiver(), name="receiver")
        receiver.add_done_callback(self._task_died)  # a bug there must close the stream, not leave it hung
        cancelled = None
        try:
            await self.done.wait()
        except asyncio.CancelledError as exc:  # Serve ended the handler (its timeout): drained as a lost link
            cancelled, self.connected, self.close_code = exc, False, CLOSE_LOST
        receiver.cancel()
        self._enqueue(Item("stop", {}, None, time.monotonic()))
        self.drain_by = time.monotonic() + DRAIN_TIMEOUT_S
        # never cancelled: its worker thread would go on using the state unseen (detached only once untouched)
        grace = DRAIN_TIMEOUT_S + DRAIN_GRACE_S
        if not (await asyncio.wait({processor}, timeout=grace))[0]:
            log.error("stream %s: a batch still runs %.0f s into the drain", self.entry.stream_id, grace)
        await asyncio.wait({processor})
        if processor.exception():  # it died (logged; the stream failed 1011): what it had not processed is
            self._give_back(failed=True)  # given back, to be resent by a resume, not lost
        if self.connected:
            try:
                self.out.put_nowait(None)  # flush what is queued, then close
            except asyncio.QueueFull:
                sender.cancel()  # a client that stopped reading gets no flush
            await asyncio.wait({sender}, timeout=5.0)
            await self._close()
        sender.cancel()
        if cancelled is not None:
            raise cancelled
        return self.close_code

    def _task_died(self, task: asyncio.Task) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, poison.Unprocessable):  # chunks of one kind kept failing (logged): ended for good
            return self.fail(CLOSE_UNPROCESSABLE, str(exc), poison.FATAL)
        log.error("stream %s: %s died", self.entry.stream_id, task.get_name(), exc_info=exc)
        if (ended := poison.internal_close(self.entry)) is not None:  # 1011 after 1011, nothing scored
            return self.fail(CLOSE_UNPROCESSABLE, ended, poison.FATAL)
        reason = "internal error while processing the stream; resume to continue"
        self.fail(CLOSE_INTERNAL, reason, "internal")

    def fail(self, code: int, reason: str, error: str) -> None:
        """End the stream with `code`; the full reason goes out first as an error event (not replayed)."""
        if self.done.is_set():
            return
        self.emit({"type": "error", "code": error, "detail": reason, "fatal": True}, record=False)
        self.close_code, self.close_reason = code, reason
        if code == CLOSE_UNPROCESSABLE:
            self.entry.ended = reason  # its resumes are refused alike (registry.acquire)
        self.done.set()

    async def _close(self) -> None:
        reason = self.close_reason.encode()[:120].decode(errors="ignore")  # a close reason is <= 123 bytes
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.ws.close(self.close_code, reason)

    def _started(self) -> None:
        started, replay = resume_events(self.entry, self.resumed, self.last_event)
        for event in [started, *self.notes, *replay]:
            self.emit(event, record=False)

    # --- events ---------------------------------------------------------------------------------------------
    def emit(self, event: dict, *, record: bool = True) -> None:
        """Record the event (for a resume) and queue it for the client; events of the chunks drained after a
        close decision still go out before the close frame."""
        if record:
            event["seq"] = self.entry.event_seq
            self.entry.event_seq += 1
            self.entry.events.append(event)
            self.hub.metrics.events.labels(event["type"]).inc()
        if not self.connected:
            return
        try:
            self.out.put_nowait(event)
        except asyncio.QueueFull:
            if self.done.is_set():
                return
            self.close_code = CLOSE_SLOW_CONSUMER
            self.close_reason = f"client read no events while {self.limits.max_queued_events} were waiting"
            self.done.set()

    async def _sender(self) -> None:
        while (event := await self.out.get()) is not None:
            try:
                await self.ws.send_text(json.dumps(event, separators=(",", ":")))
            except Exception:  # noqa: BLE001 (disconnected mid-send)
                self.connected = False
                self.done.set()
                return

    def _enqueue(self, item: Item) -> None:
        self.inbound.put(item)
        self.wake.set()

    # --- processing -----------------------------------------------------------------------------------------
    async def _processor(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.inbound.items:
                if self.drain_by is not None and time.monotonic() > self.drain_by:
                    return self._give_back()
                batch = self.inbound.take(BATCH_ITEMS)  # draining: frames are not dropped late (no one waits)
                ready, errors, late, failure = await self._run_batch(batch)
                for event in errors:
                    self.emit(event)
                self.inbound.dropped += late
                if self.inbound.dropped:
                    n, self.inbound.dropped = self.inbound.dropped, 0
                    self.hub.metrics.dropped.inc(n)
                    detail = f"{n} frames dropped unread: the stream sends faster than it is tracked"
                    self.emit({"type": "error", "code": "frames_dropped", "count": n, "detail": detail})
                await self._score(ready)
                pause.tighten(self.entry, self.limits.max_ahead_s)
                if failure is not None:  # the processor dies (1011): run() gives what is queued back
                    raise failure
                if any(i.kind == "end" for i in batch):
                    return await self._finish()
                if any(i.kind == "stop" for i in batch):
                    return

    async def _run_batch(self, batch: list[Item]) -> tuple[Ready, list[dict], int, Exception | None]:
        """`_process` on a worker thread, and None; after a failure there (a bug), what the items before it
        made and the failure, the batch from the item it failed on put back in the queue (run() gives it
        back): before, those items were lost, and a resume's next_seq passed them."""
        self.fed, self.made = 0, ([], [])
        try:
            return (*await asyncio.to_thread(self._process, batch, self.drain_by is None), None)
        except Exception as exc:  # noqa: BLE001 (re-raised by the processor once the rest is done)
            self.inbound.put_back(batch[self.fed :])
            return *self.made, 0, exc

    def _give_back(self, failed: bool = False) -> None:
        """Un-accept the chunks still queued at the drain deadline, or after the processing `failed`
        (inbound.give_back); say so, recorded, unless the stream ended for good (nothing to resend)."""
        event = give_back(self.inbound, self.entry, failed)
        if event is not None and self.close_code != CLOSE_UNPROCESSABLE:
            self.emit(event)

    def _process(self, batch: list[Item], live: bool) -> tuple[Ready, list[dict], int]:
        """Feed a batch to the state (worker thread): its windows, error events and frames dropped late.
        `fed` counts the items done and `made` holds what they made, for a failure midway (_run_batch)."""
        (ready, errors), late, e, s = self.made, 0, self.entry, self.state
        self.fed = 0
        for item in batch:
            skip = live and item.kind == "frame" and self.inbound.late(item, e, s.next_window)
            media = (s.n_samples, s.n_frames)  # before the item: a refused poison chunk keeps its time once
            taken = False  # a chunk processed without a fault: its kind's failures in a row end (poison.py)
            try:
                if item.kind == "audio":
                    self.state.add_audio(item.header, memoryview(item.payload))
                elif item.kind == "frame" and not skip:
                    self.state.add_frame(item.header, memoryview(item.payload))
                elif item.kind in ("dropped", "frame"):
                    late += item.kind == "frame"
                    self.state.add_dropped_frame(item.header)
                elif item.kind == "handling":
                    self.monitor.handling.set(item.header["active"], self.state.media_s)
            except (StreamRejected, InputError) as exc:
                code = exc.code if isinstance(exc, StreamRejected) else "bad_media"
                errors.append(
                    {"type": "error", "code": code, "detail": str(exc), "chunk": item.header.get("seq")}
                )
            except Exception:  # a bug: 1011, the stream's first such chunk given back; later ones refused
                if (event := poison.refuse(e, item, media)) is None:
                    raise
                errors.append(event)
            else:
                taken = item.kind in CHUNK_KINDS and not skip
            self.fed += 1
            ready += [(w, item.arrived) for w in poison.windows(e, item, taken)]
        return ready, errors, late

    async def _finish(self) -> None:
        tail = await asyncio.to_thread(self.state.finish)
        await self._score([(w, time.monotonic()) for w in tail])
        self.emit({"type": "end", "windows": self.state.next_window, "media_s": round(self.state.media_s, 3)})
        self.entry.finished = True
        self.close_code, self.close_reason = CLOSE_NORMAL, "stream ended"
        self.done.set()

    def _not_scored(self, windows: list[ReadyWindow]) -> None:
        """Windows cut but not scored because scoring them failed on the server: an error event each,
        recorded (a resume replays it), so the client learns of the gap instead of missing those scores."""
        detail = "not scored: the server failed while scoring this window (logged; report the stream id)"
        for w in windows:
            self.emit({"type": "error", "code": "not_scored", "window": w.index, "detail": detail})

    async def _score(self, ready: Ready) -> None:
        if not ready:
            return
        self.hub.service.watchdog.ensure_started()
        scored, version = await score_windows(
            self.hub.service.triton, [w for w, _ in ready], self.entry.stream_id
        )
        for n, ((w, arrived), window) in enumerate(zip(ready, scored, strict=True)):
            if isinstance(window, Exception):  # Triton down or overloaded for this window: the stream goes on
                detail = errors.detail_of(window)  # the gateway's own message; never a foreign exception's
                self.monitor.unscored(w.start_s)  # unknown to the alert logic: a gap only when they last
                self.emit({"type": "error", "code": "unavailable", "window": w.index, "detail": detail})
                continue
            lag = time.monotonic() - arrived
            self.hub.metrics.lag.labels(self.entry.start.mode).observe(lag)
            try:
                events = self.state.signal_events(w) + self.monitor.feed(window)
            except Exception:  # a server fault: the processor dies (1011), the resume goes on past these
                self._not_scored([v for v, _ in ready[n:]])
                raise
            for event in events:
                if event["type"] == "score":
                    event.update(lag_s=round(lag, 3), model_version=version)
                self.emit(event)
            poison.scored(self.entry)
        # Written after a failed batch too: the store keeps a copy `resume_ttl_s` after its last write, and an
        # inference outage longer than that would let an alert that is on lapse from it while the stream runs.
        self.hub.checkpoints.put(self.entry.stream_id, self.entry.key_id, self.entry.checkpoint())
