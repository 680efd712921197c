"""The monitoring stream's wire format: a JSON `start`, binary chunks with a JSON header, JSON events back.

Client → server:
- text `{"type": "start", "mode": "landmarks"|"video"|"audio", "age_group": ..., "sample_rate": 16000,
  "stream_id": optional (resume), "config": {...StreamConfig}}` — first message, exactly once. A resume
  connects to `/v1/stream?stream_id=<id>` (STREAM_ID_QUERY), so Serve routes it to the replica holding it.
- binary chunk: 4-byte big-endian header length, a JSON header, then the payload. Header
  `{"kind": "audio", "seq": n, "rate": 16000}` + little-endian float32 mono samples, or
  `{"kind": "frame", "seq": n}` + a landmark frame (FRAME_LAYOUT, float32) in landmarks mode, or
  `{"kind": "frame", "seq": n, "format": "jpeg"|"png"|"rgb", "width": w, "height": h}` + the image in video
  mode. `seq` counts chunks of that kind from 0; frames are at contract.FPS. A frame may carry `"t"`, its
  capture time in seconds since the stream's start (the audio's clock: sample k is at k / rate): it is then
  placed in its own 1/FPS slot and the slots a camera stall skipped are frames without a face (timeline.py).
- text `{"type": "handling", "active": true|false}` (a nappy change, suctioning: alerts are suppressed),
  `{"type": "end"}` (score the tail and close).

Server → client: one JSON object per event with a `type` (EVENT_TYPES). Close codes: CLOSE_* below.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from avpenet import contract
from avpenet.features.track import MAX_IMAGE_SIDE, FaceTrack

STREAM_ROUTE = "/v1/stream"
# A resume's URL may carry ?stream_id=<its id> (the SDK adds it): Serve then routes it to the Gateway replica
# holding that stream (affinity.py). It must equal the start message's stream_id.
STREAM_ID_QUERY = "stream_id"
EVENT_TYPES = (
    "started", "score", "trend", "alert", "alert_cleared", "signal_lost", "signal_back", "error", "end",
)  # fmt: skip
# Close codes (4000-4999 are the application's): the reason string says what to do.
CLOSE_NORMAL = 1000
CLOSE_UNAUTHENTICATED = 4401
CLOSE_BAD_START = 4400
CLOSE_GARBAGE = 4415
CLOSE_STALLED = 4408
CLOSE_SLOW_CONSUMER = 4409
CLOSE_OVER_LIMIT = 4429
CLOSE_INTERNAL = 1011
# Chunks of one kind failed processing 10 times in a row (stream/poison.py): the server cannot process this
# stream; ended for good (the shipped clients do not resume it), unlike a 1011.
CLOSE_UNPROCESSABLE = 4500
CLOSE_LOST = 1006  # no close frame: the link dropped (also a handler Serve cancelled)
# every close the server counts (metrics.py creates their series at 0: an alert's `increase` sees the first)
CLOSE_CODES = (
    CLOSE_NORMAL,
    CLOSE_UNAUTHENTICATED,
    CLOSE_BAD_START,
    CLOSE_GARBAGE,
    CLOSE_STALLED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_OVER_LIMIT,
    CLOSE_INTERNAL,
    CLOSE_UNPROCESSABLE,
    CLOSE_LOST,
)
CHUNK_KINDS = ("audio", "frame")  # a binary message's header `kind`: the media chunks a stream sends
MAX_HEADER_BYTES = 1024
NIPS_PER_POINT = 0.7  # NIPS (0-7) rescaled to the model's 0-10: nips = score * 0.7
# One landmark frame: landmarks [478, 3], blendshapes [52], head_pose [4, 4], face_present [1] as float32.
FRAME_LAYOUT = (
    ("landmarks", (contract.N_LANDMARKS, 3)),
    ("blendshapes", (contract.N_BLENDSHAPES,)),
    ("head_pose", (4, 4)),
    ("face_present", (1,)),
)
_SIZES = [math.prod(shape) for _, shape in FRAME_LAYOUT]
# FRAME_LAYOUT as (name, shape, start, stop) in the payload's floats, computed once (frames.py cuts by it)
FRAME_PARTS = tuple(
    (name, shape, sum(_SIZES[:i]), sum(_SIZES[: i + 1])) for i, (name, shape) in enumerate(FRAME_LAYOUT)
)
FRAME_FLOATS = FRAME_PARTS[-1][3]
MAX_AUDIO_CHUNK_S = 2.0  # a chunk longer than this is a file upload, not a live stream
MAX_FRAME_TIME_S = 1e9  # a frame's `t` beyond this is not a capture time (and would overflow a slot number)
FRAME_TIME = "t"  # a frame header's capture time (stream.timeline)


class StreamRejected(Exception):
    """A message the stream refuses; `code` is the error event's code, the stream keeps its state."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def on_scale(score: float, scale: str) -> float:
    """A 0-10 model score on the stream's threshold scale."""
    return score * NIPS_PER_POINT if scale == "nips" else score


class StreamConfig(BaseModel):
    """Per-stream alerting and flow-control settings (each has a default; send only what differs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: Literal["avpenet", "nips"] = "avpenet"  # the threshold's scale: model 0-10, or NIPS-equivalent 0-7
    threshold: float = Field(6.0, ge=0, le=10)  # alert when the score (on `scale`) stays above this
    windows: int = Field(5, ge=1, le=600)  # ... for this many consecutive unsuppressed windows
    clear_windows: int = Field(5, ge=1, le=600)  # alert_cleared after this many windows at or below
    baseline_s: float = Field(0.0, ge=0, le=3600)  # first seconds: no alerts; their median is the baseline
    baseline_margin: float = Field(
        0.0, ge=0, le=10
    )  # after the baseline: also require score > baseline + margin
    handling_grace_s: float = Field(contract.WINDOW_SECONDS, ge=0, le=600)  # suppressed after handling ends
    trend_alpha: float = Field(0.3, gt=0, le=1)  # exponential smoothing of the score trend
    trend_every: int = Field(5, ge=1, le=600)  # a trend event every this many windows
    # A modality this far behind the other is lost. More than an audio chunk may hold: a sender of 2-s chunks
    # has its audio up to 2 s behind its frames by design, and with a shorter timeout every window lost some.
    signal_timeout_s: float = Field(3.0, gt=MAX_AUDIO_CHUNK_S, le=60)

    @model_validator(mode="after")
    def _reachable(self) -> StreamConfig:
        top = on_scale(contract.SCORE_MAX, self.scale)
        if self.threshold >= top:
            raise ValueError(
                f"threshold {self.threshold:g} can never be exceeded on the {self.scale} scale (0-{top:g})"
            )
        return self


class Start(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["start"]
    mode: Literal["landmarks", "video", "audio"]
    age_group: str = "unknown"
    sample_rate: int = Field(
        contract.SAMPLE_RATE, ge=contract.AUDIO_MIN_INPUT_RATE, le=contract.AUDIO_MAX_INPUT_RATE
    )
    audio: bool = True  # False: frames only (the audio modality is masked)
    # landmarks mode: (width, height) of the frames the device tracked; the bounds an uploaded .npz track has
    image_size: tuple[
        Annotated[int, Field(ge=0, le=MAX_IMAGE_SIDE)], Annotated[int, Field(ge=0, le=MAX_IMAGE_SIDE)]
    ] = (0, 0)
    stream_id: str | None = Field(None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    last_event: int = Field(-1, ge=-1)  # resume: events after this seq are sent again (as far as kept)
    config: StreamConfig = StreamConfig()

    @field_validator("age_group")
    @classmethod
    def _age(cls, value: str) -> str:
        contract.age_index(value)  # ValueError with the allowed names
        return value

    @model_validator(mode="after")
    def _something(self) -> Start:
        if self.mode == "audio" and not self.audio:
            raise ValueError("mode 'audio' with audio false sends nothing to score")
        if self.mode == "landmarks" and 0 in self.image_size:
            raise ValueError(
                "mode 'landmarks' needs image_size [width, height]: the pixels of the frames the device "
                "tracked (landmarks are fractions of each side; without the frame's shape the face is "
                "distorted)"
            )
        return self


def parse_start(text: str | bytes) -> Start:
    """The start message, or StreamRejected('bad_start') naming the field at fault."""
    try:
        return Start.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise StreamRejected("bad_start", f"start message: {where}: {first.get('msg', 'invalid')}") from None


def parse_control(text: str) -> dict:
    """A text message after start: handling / end (anything else is refused)."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser's stack
        raise StreamRejected("garbage", "text message is not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") not in ("handling", "end"):
        raise StreamRejected("garbage", "text messages after start are {'type': 'handling'|'end'}")
    if msg["type"] == "handling" and not isinstance(msg.get("active"), bool):
        raise StreamRejected("garbage", "handling needs 'active': true or false")
    return msg


def parse_chunk(data: bytes) -> tuple[dict, memoryview]:
    """(header, payload) of a binary chunk; StreamRejected('garbage') when it is not one."""
    if len(data) < 4:
        raise StreamRejected("garbage", "binary message shorter than its 4-byte header length")
    (size,) = struct.unpack(">I", data[:4])
    if not 2 <= size <= MAX_HEADER_BYTES:
        raise StreamRejected("garbage", f"chunk header length {size} is not within 2..{MAX_HEADER_BYTES}")
    if len(data) < 4 + size:
        raise StreamRejected(
            "garbage",
            f"binary message of {len(data)} bytes is cut short: its header length says a {size}-byte JSON "
            f"header follows the first 4 bytes ({4 + size} bytes at least)",
        )
    try:
        header = json.loads(bytes(data[4 : 4 + size]))
    except (ValueError, RecursionError):
        raise StreamRejected("garbage", "chunk header is not JSON") from None
    if not isinstance(header, dict) or header.get("kind") not in CHUNK_KINDS:
        raise StreamRejected("garbage", "chunk header needs 'kind': 'audio' or 'frame'")
    seq = header.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise StreamRejected("garbage", "chunk header needs 'seq': a non-negative integer")
    return header, memoryview(data)[4 + size :]


def frame_time(header: dict) -> float | None:
    """A frame header's capture time in seconds, None when it has none; StreamRejected when it is not one."""
    t = header.get(FRAME_TIME)
    if t is None:
        return None
    # NaN fails the range test; a huge JSON integer is compared, never converted
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= MAX_FRAME_TIME_S:
        raise StreamRejected(
            "bad_frame_time",
            f"frame {FRAME_TIME!r} must be its capture time in seconds since the stream's start, a number "
            f"from 0 to {MAX_FRAME_TIME_S:g}; got {str(t)[:40]!r}",
        )
    return float(t)


def encode_chunk(header: dict, payload: bytes) -> bytes:
    """A binary chunk as clients send it."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + payload


def landmark_frame_bytes(track: FaceTrack, i: int) -> bytes:
    """Frame i of a face track as one FRAME_LAYOUT payload (a tracked frame in privacy mode)."""
    present = 1.0 if track.face_present[i] else 0.0
    parts = (track.landmarks[i], track.blendshapes[i], track.head_pose[i], np.array([present]))
    return b"".join(np.asarray(p, "<f4").reshape(-1).tobytes() for p in parts)
