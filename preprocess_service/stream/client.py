"""A Python client of `/v1/stream` (websockets): open a stream, send chunks, read events; replay a recording.

`replay` sends a recording as a bedside device would: every 1/FPS s one frame and 1/FPS s of audio, at real
time (`speed` 1), faster (`speed` > 1) or as fast as the server takes it (`speed` 0). `avpenet monitor`, the
tests and the load driver use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.budget import PROXY_TIMEOUT_HEADER
from preprocess_service.stream.protocol import (
    FRAME_TIME,
    STREAM_ID_QUERY,
    STREAM_ROUTE,
    encode_chunk,
    landmark_frame_bytes,
)


def ws_url(http_url: str) -> str:
    """ws://host:port/v1/stream from the gateway's http://host:port."""
    return http_url.rstrip("/").replace("https://", "wss://").replace("http://", "ws://") + STREAM_ROUTE


@dataclass
class Recording:
    """What a device streams: 16 kHz mono audio and/or a face track (privacy mode) or RGB frames (video)."""

    wave: np.ndarray | None = None
    track: FaceTrack | None = None
    frames: list[np.ndarray] | None = None  # RGB uint8 at contract.FPS

    @property
    def mode(self) -> str:
        return "video" if self.frames is not None else "landmarks" if self.track is not None else "audio"

    @property
    def n_frames(self) -> int:
        return len(self.frames) if self.frames is not None else self.track.n_frames if self.track else 0

    def ticks(self) -> int:
        samples = 0 if self.wave is None else self.wave.size
        return max(self.n_frames, -(-samples // contract.SAMPLES_PER_FRAME))

    def start(self, age_group: str, **extra) -> dict:
        msg = {"type": "start", "mode": self.mode, "age_group": age_group, "audio": self.wave is not None}
        if self.track is not None:
            msg["image_size"] = [int(v) for v in self.track.image_size]
        return {**msg, **extra}


class Stream:
    """An open stream: `send_*` number the chunks; `events` is every event received, in order."""

    def __init__(self, conn: ClientConnection, started: dict) -> None:
        self.conn, self.started = conn, started
        self.seq = dict(started.get("next_seq", {"audio": 0, "frame": 0}))
        self.events: list[dict] = []

    async def send_audio(self, samples: np.ndarray, rate: int = contract.SAMPLE_RATE) -> None:
        header = {"kind": "audio", "seq": self.seq["audio"], "rate": rate}
        self.seq["audio"] += 1
        await self.conn.send(encode_chunk(header, np.asarray(samples, "<f4").tobytes()))

    async def send_landmarks(self, track: FaceTrack, i: int, t: float | None = None) -> None:
        """Frame i of a track; `t`: its capture time in s since the stream's start (protocol.FRAME_TIME)."""
        await self._send_frame({}, landmark_frame_bytes(track, i), t)

    async def send_image(self, rgb: np.ndarray, fmt: str = "png", t: float | None = None) -> None:
        h, w = rgb.shape[:2]
        if fmt == "rgb":
            payload = np.ascontiguousarray(rgb, np.uint8).tobytes()
        else:
            import cv2

            ok, buf = cv2.imencode("." + fmt.replace("jpeg", "jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            payload = buf.tobytes()
        await self._send_frame({"format": fmt, "width": w, "height": h}, payload, t)

    async def _send_frame(self, header: dict, payload: bytes, t: float | None) -> None:
        header = {"kind": "frame", "seq": self.seq["frame"], **header}
        if t is not None:
            header[FRAME_TIME] = round(t, 6)
        await self.conn.send(encode_chunk(header, payload))
        self.seq["frame"] += 1

    async def control(self, **msg) -> None:
        await self.conn.send(json.dumps(msg))

    async def receive_all(self, on_event: Callable[[dict], None] | None = None) -> None:
        """Read events until the server closes the connection."""
        try:
            async for raw in self.conn:
                event = json.loads(raw)
                self.events.append(event)
                if on_event:
                    on_event(event)
        except Exception:  # noqa: BLE001 (closed abnormally: the close code says why)
            pass

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    @property
    def close_reason(self) -> str | None:
        return self.conn.close_reason


async def open_stream(url: str, api_key: str | None, start: dict, *, timeout_s: float = 30.0) -> Stream:
    """Connect, send `start`, wait for `started`; ConnectionError with the server's reason if refused."""
    headers = {PROXY_TIMEOUT_HEADER: "0"}  # Ray's proxy would otherwise end the stream after 60 s
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    # No permessage-deflate: samples and frames hardly compress; deflating big frames blocks the loop.
    if start.get("stream_id"):  # Serve routes it to the Gateway replica holding that stream (a resume)
        url = f"{url}?{urlencode({STREAM_ID_QUERY: start['stream_id']})}"
    conn = await connect(
        url, additional_headers=headers, proxy=None, max_size=2**22, open_timeout=timeout_s, compression=None
    )
    with contextlib.suppress(ConnectionClosed):  # refused before reading it: the reason is queued to read
        await conn.send(json.dumps(start))
    try:
        first = json.loads(await asyncio.wait_for(conn.recv(), timeout_s))
    except Exception as exc:  # noqa: BLE001
        raise ConnectionError(f"stream refused: {conn.close_code} {conn.close_reason}") from exc
    if first.get("type") != "started":
        await conn.close()
        raise ConnectionError(f"stream refused: {first.get('code')}: {first.get('detail')}")
    return Stream(conn, first)


async def send_recording(
    stream: Stream,
    rec: Recording,
    *,
    speed: float = 1.0,
    first_tick: int = 0,
    handling: list[tuple[float, float]] = (),
    fmt: str = "png",
    end: bool = True,
) -> None:
    """Send ticks first_tick.. of `rec` (one frame + 1/FPS s of audio each), paced by `speed`, then `end`."""
    t0 = time.monotonic()
    marks = sorted([(b, True) for b, _ in handling] + [(e, False) for _, e in handling])
    for k in range(first_tick, rec.ticks()):
        while marks and marks[0][0] <= k / contract.FPS + 1e-9:  # handling declared at its media time
            await stream.control(type="handling", active=marks.pop(0)[1])
        if rec.wave is not None:
            piece = rec.wave[k * contract.SAMPLES_PER_FRAME : (k + 1) * contract.SAMPLES_PER_FRAME]
            if piece.size:
                await stream.send_audio(piece)
        if k < rec.n_frames:  # each with its capture time, as a device with a clock sends it
            if rec.frames is not None:
                await stream.send_image(rec.frames[k], fmt, t=k / contract.FPS)
            else:
                await stream.send_landmarks(rec.track, k, t=k / contract.FPS)
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
) -> Stream:
    """Stream a whole recording and collect its events until the server closes (after `end`)."""
    stream = await open_stream(url, api_key, rec.start(age_group, config=config or {}))
    if on_event:
        on_event(stream.started)
    reader = asyncio.create_task(stream.receive_all(on_event))
    await send_recording(stream, rec, speed=speed, handling=handling, fmt=fmt)
    await reader
    return stream
