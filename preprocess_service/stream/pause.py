"""The back-pressure pause's bound: how far behind real time a stream's processing may fall.

While its queue is full the receiver reads no more (inbound.Inbound.room), and what the device goes on
sending piles up unread in Serve's proxy: the pause is for a backlog the stream may hold (the resend of an
outage, `max_ahead_s` sent ahead), not for a stream processed slower than real time, which is closed 4409
`overloaded` once its lag passes `Entry.behind_max_s`. The bound is kept on the Entry across a resume and
only an outage raises it; it comes down with the lag as the stream catches up.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from preprocess_service.stream.registry import Entry


def processed_behind_s(entry: Entry) -> float:
    """Seconds the stream's processing is behind the wall clock since its first chunk came (its media
    processed); not since it opened: a device that waits before sending has no lag for it."""
    if entry.first_chunk_at is None:
        return 0.0
    return time.monotonic() - entry.first_chunk_at - entry.state.media_s


def chunk_read(entry: Entry) -> None:
    """A chunk was accepted: the stream's media clock starts at its first, and its last is when the device's
    media stopped reaching the replica should the connection end (the outage a resume makes up)."""
    entry.read_at = time.monotonic()
    if entry.first_chunk_at is None:
        entry.first_chunk_at = entry.read_at


def behind_bound(entry: Entry, resumed: bool, max_ahead_s: float) -> None:
    """Set how far behind real time the stream's processing may fall while the receiver pauses (room): the
    backlog a resend may hold. `max_ahead_s` on a new stream; a resume adds to the bound the stream had the
    time since its last chunk was read (the outage it makes up, measured from there, not from the detach: a
    silent link is noticed only `stall_timeout_s` later), never its whole lag: a stream closed 4409
    `overloaded` gains nothing by resuming, and is closed again once it falls further behind."""
    if resumed:
        entry.behind_max_s += max(0.0, time.monotonic() - entry.read_at)
    else:
        entry.behind_max_s = max_ahead_s


def tighten(entry: Entry, max_ahead_s: float) -> None:
    """After each batch processed: the bound comes down with the lag, to `max_ahead_s` once the stream has
    caught up, so an outage's allowance ends with its backlog (a stream that slows later is closed at
    `max_ahead_s` behind, not at the outage's lag)."""
    entry.behind_max_s = min(entry.behind_max_s, max(0.0, processed_behind_s(entry)) + max_ahead_s)
