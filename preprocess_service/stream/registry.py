"""The replica's monitoring streams: limits per key and per replica, and dropped streams kept for a resume.

A stream's state (buffers, its FaceLandmarker, the alert state) lives in the Gateway replica that accepted
it. Streams are held per (stream id, API key id): an id is the caller's own, so two API keys that chose the
same id hold two streams. A reconnect with the same stream id and key reaches that state only on the same
replica: the Gateway's request router sends a resume whose URL names its stream id there (affinity.py); one
that lands elsewhere (the holder gone or full, or no id in the URL) starts afresh under the same id,
`resumed: false`, with the alert state of the stream's last checkpoint when one is kept (`restored: true`;
checkpoints.py). Detached streams past `resume_ttl_s` are forgotten by `sweep`, and sooner when a new
stream needs their place under a limit.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from preprocess_service.stream.alerts import AlertMonitor
from preprocess_service.stream.limits import DRAIN_TIMEOUT_S, StreamLimits
from preprocess_service.stream.protocol import CHUNK_KINDS, Start, StreamRejected
from preprocess_service.stream.state import StreamState

log = logging.getLogger("avpenet.gateway.stream")


@dataclass
class Entry:
    """One stream: what survives a reconnect."""

    stream_id: str
    key_id: str
    start: Start
    state: StreamState
    monitor: AlertMonitor
    events: deque = field(default_factory=deque)  # the last events sent (for a resume)
    event_seq: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    received_s: dict = field(default_factory=lambda: {"audio": 0.0, "frame": 0.0})  # media seconds received
    attached: bool = True
    attached_wall: float = field(default_factory=time.time)  # the last open or resume (affinity.py)
    detached_at: float = 0.0
    finished: bool = False
    restored: bool = False  # opened with the alert state of a checkpoint another replica wrote
    # The back-pressure pause's lag bound and its clocks (pause.py): kept across a resume, so
    # closing and resuming a stream the service cannot keep up with does not raise it.
    behind_max_s: float = 0.0
    first_chunk_at: float | None = None  # its first chunk accepted: its processing lag counts from it
    read_at: float = field(default_factory=time.monotonic)  # its last chunk accepted
    # (kind, seq) of the chunk a processing failure gave back (1011), once per stream: every chunk failing
    # after it is refused; and failures in a row per kind, the stream ended at poison.MAX_FAILED_IN_A_ROW
    # (poison.py). Not checkpointed: a restored stream's seqs start afresh.
    failed_chunk: tuple[str, int] | None = None
    failing: dict = field(default_factory=lambda: dict.fromkeys(CHUNK_KINDS, 0))
    closed_1011: int = 0  # internal-error closes since a window was last scored (poison.internal_close)
    ended: str = ""  # why it was ended 4500 (poison.py): a resume is refused with it, as its close said

    @property
    def key(self) -> tuple[str, str]:
        """The registry's key: a stream id names a stream only within its API key."""
        return self.stream_id, self.key_id

    def checkpoint(self) -> dict:
        """What a reconnect that lands on another replica restores (checkpoints.py): no media."""
        return {
            "start": resume_fields(self.start),
            "event_seq": self.event_seq,
            "alert": self.monitor.snapshot(self.state.media_s),
            "signals_lost": dict(self.state.signals.lost),  # so a modality lost before gets its signal_back
        }


def resume_fields(start: Start) -> dict:
    """What a resume must send as it was (mode, rates, config); opened without an id, a stream resumes with
    the one it got."""
    return start.model_dump(exclude={"last_event", "stream_id"})


class StreamRegistry:
    def __init__(
        self, limits: StreamLimits, max_pixels: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.max_pixels = max_pixels
        self.clock = clock  # of the resume window (tests drive it)
        self.streams: dict[tuple[str, str], Entry] = {}  # (stream id, API key id) -> its stream

    def sweep(self, now: float | None = None) -> int:
        """Forget detached streams past their resume window (closing their trackers); how many. Run when a
        stream is acquired and periodically (route.StreamHub), so a quiet replica lets them go too."""
        now = self.clock() if now is None else now
        expired = [
            k
            for k, e in self.streams.items()
            if not e.attached and now - e.detached_at > self.limits.resume_ttl_s
        ]
        for key in expired:
            self.drop(key)
        return len(expired)

    def acquire(
        self, start: Start, stream_id: str, key_id: str, restore: dict | None = None
    ) -> tuple[Entry, bool]:
        """(entry, resumed): the detached stream of that id and key (another key's stream of the same id is
        another stream), or a new one within the limits, with the alert state of `restore` (a checkpoint of
        that id and key) when it was written for the same start. A held copy whose checkpoint another replica
        took further (more events) gives way to it."""
        self.sweep()
        if restore is not None and restore["start"] != resume_fields(start):
            restore = None  # another mode or config: that alert state does not apply
        entry = self.streams.get((stream_id, key_id))
        if entry is not None:
            if entry.attached:
                raise StreamRejected(  # a reconnect before the server saw the old connection break: retry
                    "stream_id_busy",
                    "this stream id is open on another connection; retry (a broken connection is "
                    f"closed after {self.limits.stall_timeout_s:g} s without data, then its queued chunks "
                    f"are processed, for up to {DRAIN_TIMEOUT_S:g} s)",
                )
            if (held := resume_fields(entry.start)) != (sent := resume_fields(start)):
                field = next(k for k in held if held[k] != sent.get(k))
                raise StreamRejected(
                    "bad_start",
                    f"a resume must send the same start message; its {field!r} differs. To start anew, use a "
                    f"new stream_id (this one is held for {self.limits.resume_ttl_s:g} s after its last use)",
                )
            if restore is None or restore["event_seq"] <= entry.event_seq:
                if entry.ended:  # closed 4500 "do not resume" here: a client resuming anyway is told again
                    raise StreamRejected("unprocessable", entry.ended)
                entry.attached, entry.attached_wall = True, time.time()
                entry.event_seq = max(entry.event_seq, start.last_event + 1)  # it went further elsewhere
                return entry, True
            self.drop(entry.key)  # left behind: the stream went on on another replica
        self._make_room(key_id)
        entry = Entry(
            stream_id=stream_id,
            key_id=key_id,
            start=start,
            state=StreamState(start, self.max_pixels),
            monitor=AlertMonitor(start.config),
            events=deque(maxlen=self.limits.replay_events),
        )
        if restore is not None:
            entry.monitor.restore(restore["alert"])
            entry.event_seq, entry.restored = int(restore["event_seq"]), True
            entry.state.signals.restore(restore.get("signals_lost", {}))  # absent: a checkpoint from before
        # restored or afresh, it numbers on from what the client holds (last_event; -1 on a first open)
        entry.event_seq = max(entry.event_seq, start.last_event + 1)
        self.streams[entry.key] = entry
        return entry, False

    def _make_room(self, key_id: str) -> None:
        """Room for a new stream within both limits. A stream kept only for a resume gives way to a new one,
        the longest detached first (its key's own for the per-key limit, any for the replica's): its alert
        state stays in its checkpoint, so a later resume is `restored`, losing only its unscored samples.
        Only attached streams refuse it (4429). Before, held streams counted as open ones for `resume_ttl_s`:
        a central station restarted with new stream ids had its whole ward refused for up to a minute."""
        if len(self.streams) >= self.limits.max_streams and not self._give_way(None):
            raise StreamRejected(
                "over_limit", f"this replica holds {self.limits.max_streams} streams; retry later"
            )
        mine = sum(1 for e in self.streams.values() if e.key_id == key_id)
        if mine >= self.limits.max_streams_per_key and not self._give_way(key_id):
            raise StreamRejected(
                "over_limit",
                f"this API key has {self.limits.max_streams_per_key} open streams; end one first",
            )

    def _give_way(self, key_id: str | None) -> bool:
        """Forget the longest-detached stream (of `key_id`; None: of any key); False when none is detached."""
        held = [e for e in self.streams.values() if not e.attached and key_id in (None, e.key_id)]
        if not held:
            return False
        oldest = min(held, key=lambda e: e.detached_at)
        log.info("stream %s of %s, detached, gave way to a new stream", oldest.stream_id, oldest.key_id)
        self.drop(oldest.key)
        return True

    def detach(self, entry: Entry) -> None:
        """The connection went away: keep the state for `resume_ttl_s` (a finished stream is dropped)."""
        entry.attached = False
        entry.detached_at = self.clock()
        if entry.finished or self.limits.resume_ttl_s == 0:
            self.drop(entry.key)

    def drop(self, key: tuple[str, str]) -> None:
        """Forget the stream of (stream id, API key id), closing its tracker."""
        entry = self.streams.pop(key, None)
        if entry is not None:
            entry.state.close()

    def count(self) -> int:
        return len(self.streams)

    def attach_times(self) -> dict[tuple[str, str], float]:
        """(stream id, API key id) -> wall time of its last open or resume, for every stream held (read from
        any thread)."""
        return {key: e.attached_wall for key, e in self.streams.copy().items()}


def resume_events(entry: Entry, resumed: bool, last_event: int) -> tuple[dict, list[dict]]:
    """The `started` event and, on a resume, what the client missed: the kept events after `last_event`,
    led by an `events_missed` error when some are older than the replay buffer (it cannot ask for them)."""
    s, kept = entry.state, list(entry.events)
    started = {
        "type": "started", "stream_id": entry.stream_id, "resumed": resumed, "restored": entry.restored,
        "next_seq": dict(s.next_seq), "media_s": round(s.media_s, 3), "next_window": s.next_window,
        "config": entry.start.config.model_dump(),
        "alerting": entry.monitor.alerting,  # an alert raised in events no longer kept is still on
    }  # fmt: skip
    replay: list[dict] = []
    if resumed or entry.restored:
        missed = (kept[0]["seq"] if kept else entry.event_seq) - last_event - 1
        if missed > 0:
            detail = f"{missed} events after last_event {last_event} are no longer kept"
            replay.append({"type": "error", "code": "events_missed", "count": missed, "detail": detail})
        replay += [event for event in kept if event["seq"] > last_event]
    return started, replay
