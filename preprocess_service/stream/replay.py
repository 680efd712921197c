"""A recording streamed as a bedside device sends it: each 1/FPS s a frame and 1/FPS s of audio, at `speed`
times real time (0: as fast as the server takes it), a dropped link resumed (`replay`). For `avpenet
monitor`, the tests and the load driver; the connection itself is `client.Stream`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from websockets.exceptions import ConnectionClosed

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.stream.client import RESUMABLE, Stream, open_stream
from preprocess_service.stream.protocol import CLOSE_NORMAL


class VideoFrames(Sequence):
    """A video file's RGB frames at contract.FPS (`tracker.iter_video_frames`), decoded as they are read, not
    held: a list of them held 2.7 MB a frame at 720p (60 s: 1.7 GB peak RSS). Reading in order (a replay)
    decodes each frame once; a read behind the last one (a resume) decodes again from the start. Its length
    is counted by one decoding pass when it is made."""

    def __init__(self, data: bytes, limits) -> None:
        from avpenet.features import tracker

        self._frames = functools.partial(tracker.iter_video_frames, data, limits)
        self._count = sum(1 for _ in self._frames())
        self._reader, self._next, self._last = None, 0, None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, k: int) -> np.ndarray:
        if not isinstance(k, int) or not 0 <= k < self._count:
            raise IndexError(f"frame {k!r} of {self._count}")
        if self._reader is None or k < self._next - 1:  # first read, or behind: decode from the start
            self._reader, self._next = iter(self._frames()), 0
        while self._next <= k:
            self._last, self._next = next(self._reader), self._next + 1
        return self._last


@dataclass
class Recording:
    """What a device streams: 16 kHz mono audio and/or a face track (privacy mode) or RGB frames (video)."""

    wave: np.ndarray | None = None
    track: FaceTrack | None = None
    frames: Sequence[np.ndarray] | None = None  # RGB uint8 at contract.FPS (a file's: VideoFrames)

    @property
    def mode(self) -> str:
        return "video" if self.frames is not None else "landmarks" if self.track is not None else "audio"

    @property
    def n_frames(self) -> int:
        return len(self.frames) if self.frames is not None else self.track.n_frames if self.track else 0

    @property
    def audio_ticks(self) -> int:
        """Ticks holding sound: the last one may be a part of a tick."""
        return -(-(0 if self.wave is None else self.wave.size) // contract.SAMPLES_PER_FRAME)

    def ticks(self) -> int:
        return max(self.n_frames, self.audio_ticks)

    def start(self, age_group: str, **extra) -> dict:
        msg = {"type": "start", "mode": self.mode, "age_group": age_group, "audio": self.wave is not None}
        if self.track is not None:
            msg["image_size"] = [int(v) for v in self.track.image_size]
        return {**msg, **extra}


async def send_recording(
    stream: Stream,
    rec: Recording,
    *,
    speed: float = 1.0,
    first_tick: int = 0,
    last_tick: int | None = None,
    handling: list[tuple[float, float]] = (),
    fmt: str = "png",
    end: bool = True,
    sent: dict[str, int] | None = None,
    origin_tick: int = 0,
) -> None:
    """Send ticks first_tick..last_tick (default: to the end) of `rec` (one frame + 1/FPS s of audio each),
    paced by `speed`, then `end`. `sent`: per kind, the ticks already sent (their chunks are skipped). From a
    later first tick (a resume), the handling marks before it go out as one: the state they leave. Frames
    carry their capture time from `origin_tick`, the tick at which the server's stream began."""
    sent = sent or {}
    t0 = time.monotonic()
    marks = sorted([(b, True) for b, _ in handling] + [(e, False) for _, e in handling])
    past = [m for m in marks if first_tick and m[0] <= first_tick / contract.FPS + 1e-9]
    if past:  # the server ignores a state it is already in: right whether it kept the stream or not
        await stream.control(type="handling", active=past[-1][1])
        marks = marks[len(past) :]
    for k in range(first_tick, rec.ticks() if last_tick is None else min(last_tick, rec.ticks())):
        while marks and marks[0][0] <= k / contract.FPS + 1e-9:  # handling declared at its media time
            await stream.control(type="handling", active=marks.pop(0)[1])
        if rec.wave is not None and k >= sent.get("audio", 0):
            piece = rec.wave[k * contract.SAMPLES_PER_FRAME : (k + 1) * contract.SAMPLES_PER_FRAME]
            if piece.size:
                await stream.send_audio(piece)
        if sent.get("frame", 0) <= k < rec.n_frames:  # each with its capture time, as a device sends it
            if rec.frames is not None:
                await stream.send_image(rec.frames[k], fmt, t=(k - origin_tick) / contract.FPS)
            else:
                await stream.send_landmarks(rec.track, k, t=(k - origin_tick) / contract.FPS)
        if speed > 0:
            delay = t0 + (k - first_tick + 1) / (contract.FPS * speed) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    if end:
        await stream.control(type="end")


async def replay(
    url: str,
    api_key: str | None,
    rec: Recording,
    *,
    age_group: str = "unknown",
    speed: float = 1.0,
    config: dict | None = None,
    handling: list[tuple[float, float]] = (),
    on_event: Callable[[dict], None] | None = None,
    fmt: str = "png",
    reconnects: int = 0,
) -> Stream:
    """Stream a whole recording and collect its events until the server closes (after `end`). Up to
    `reconnects` times, a link that drops (RESUMABLE) is resumed (`Stream.reconnect`) and the recording goes
    on from the tick it had reached; the Stream returned is the last connection's."""
    stream = await open_stream(url, api_key, rec.start(age_group, config=config or {}))
    kinds = [k for k, has in (("audio", rec.wave is not None), ("frame", rec.n_frames > 0)) if has]
    done = dict.fromkeys(kinds, 0)  # ticks sent of each kind (a send that raised counts: it is kept)
    origin = 0  # the tick at which the server's stream began
    while True:
        if on_event:
            on_event(stream.started)
        reader, before = asyncio.create_task(stream.receive_all(on_event)), dict(stream.seq)
        with contextlib.suppress(ConnectionClosed):  # the reader has the close code
            await send_recording(stream, rec, speed=speed, first_tick=resume_tick(rec, done),
                                 handling=handling, fmt=fmt, sent=done, origin_tick=origin)  # fmt: skip
        await reader
        if reconnects <= 0 or stream.close_code == CLOSE_NORMAL or stream.close_code not in RESUMABLE:
            return stream
        reconnects -= 1
        done = {k: done[k] + stream.seq[k] - before[k] for k in kinds}
        stream = await stream.reconnect()
        if not stream.started["resumed"]:  # a new stream (restored or afresh): its clock starts here, and
            origin = max(done.values(), default=0)  # both kinds go on from the furthest tick reached
            done = dict.fromkeys(kinds, origin)


def resume_tick(rec: Recording, done: dict[str, int]) -> int:
    """The tick a resume sends from: the least advanced kind that still has chunks to send. A kind sent to its
    end (a recording whose sound stops before its picture) does not hold it back: from there the resume
    slept through ticks it had sent, sending nothing (past `stall_timeout_s` the server closed the stream),
    and declared handling marks again at the wrong media time."""
    ends = {"audio": rec.audio_ticks, "frame": rec.n_frames}
    pending = [n for kind, n in done.items() if n < ends[kind]]
    return min(pending, default=max(done.values(), default=0))
