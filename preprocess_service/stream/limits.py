"""Per-replica limits of monitoring streams (GatewaySettings.streams; Serve config `args.streams`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DRAIN_TIMEOUT_S = 30.0  # after a disconnect, process queued chunks for this long; later ones are given back
STUCK_S = 30.0  # a full queue the processor takes nothing from for this long: closed 4409 `overloaded`


class StreamLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Attached + detached streams per Gateway replica, and per API key (per replica): a new stream takes the
    # place of a detached one (registry._make_room); with every stream attached, close 4429.
    max_streams: int = Field(64, gt=0)
    max_streams_per_key: int = Field(16, gt=0)
    start_timeout_s: float = Field(10.0, gt=0)  # the start message must come within this
    stall_timeout_s: float = Field(10.0, gt=0)  # no chunk accepted for this long: close 4408 (resumable)
    resume_ttl_s: float = Field(60.0, ge=0)  # a dropped stream's state is kept this long for a resume
    # Chunks received but not yet processed (15 s of 10 fps frames and 0.1-s audio chunks), and their payload
    # bytes. Beyond the bytes the oldest queued frames are dropped; beyond either with no frame left to drop,
    # the receiver reads no more until the stream's processing has caught up (a resend after an outage), while
    # that processing is within the lag a resume explains and `max_ahead_s` (pause.py: Entry.behind_max_s).
    max_pending_items: int = Field(300, gt=0)
    max_pending_bytes: int = Field(8 * 1024 * 1024, gt=0)
    # A live stream's frame this far behind real time by its turn, while a score waits on it, is dropped
    # unread (a frame without a face): a replica tracking more video than its CPUs can keeps its scores near
    # real time instead of falling further behind (Inbound.late). Audio is never dropped.
    max_frame_wait_s: float = Field(1.0, gt=0)
    # Media received ahead of the wall clock since the stream opened (a resume may resend its whole outage at
    # once: the wall clock ran on through it): beyond this the sender is flooding, closed 4409 `too_fast`.
    # Serve's HTTP proxy buffers a WebSocket's incoming messages without backpressure, so closing early is
    # what bounds its memory.
    max_ahead_s: float = Field(10.0, gt=0)
    max_queued_events: int = Field(256, gt=0)  # events the client has not read; beyond: close 4409
    replay_events: int = Field(64, ge=0)  # last events kept per stream for a resume (`last_event`)
