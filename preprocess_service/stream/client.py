"""A Python client of `/v1/stream` (websockets): open a stream, send chunks, read events; replay a recording.

`replay` sends a recording as a bedside device would (each 1/FPS s a frame and 1/FPS s of audio) at `speed`
times real time (0: as fast as the server takes it), for `avpenet monitor`, the tests and the load driver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.budget import PROXY_TIMEOUT_HEADER
from preprocess_service.stream.protocol import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_STALLED,
    FRAME_TIME,
    STREAM_ID_QUERY,
    STREAM_ROUTE,
    encode_chunk,
    landmark_frame_bytes,
)

# Chunks a stream keeps for a resend: twice what a server queues (streams.max_pending_bytes).
KEEP_BYTES = 16 * 1024 * 1024
# Closes a resume may get past: link lost (1006, none), replica stopping (1001) or restarting (1012), 1011
RESUMABLE = {None, 1001, 1006, 1012, CLOSE_INTERNAL, CLOSE_STALLED}  # and a stall (4408)


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
    """An open stream: `send_*` number the chunks; `events` is every event received, in order. The chunks
    sent last are kept (up to KEEP_BYTES) so that `reconnect` can resend what the server never processed."""

    def __init__(
        self, conn: ClientConnection, started: dict, opened: dict | None = None, keep_bytes: int = KEEP_BYTES
    ) -> None:
        self.conn, self.started = conn, started
        self.seq = dict(started.get("next_seq", {"audio": 0, "frame": 0}))
        self.events: list[dict] = []
        self.opened = opened or {}  # open_stream's arguments, for reconnect
        self.sent: deque[tuple[str, int, bytes]] = deque()  # (kind, seq, chunk) in send order
        self._sent_bytes, self.keep_bytes = 0, keep_bytes
        self.event_floor = -1  # the last event of the connection this one resumed, while it numbers on

    async def send_audio(self, samples: np.ndarray, rate: int = contract.SAMPLE_RATE) -> None:
        header = {"kind": "audio", "seq": self.seq["audio"], "rate": rate}
        self.seq["audio"] += 1
        await self._send(header, np.asarray(samples, "<f4").tobytes())

    async def _send(self, header: dict, payload: bytes) -> None:
        chunk = encode_chunk(header, payload)
        self._keep(header["kind"], header["seq"], chunk)
        await self.conn.send(chunk)

    def _keep(self, kind: str, seq: int, chunk: bytes) -> None:
        self.sent.append((kind, seq, chunk))
        self._sent_bytes += len(chunk)
        while self._sent_bytes > self.keep_bytes:
            self._sent_bytes -= len(self.sent.popleft()[2])

    @property
    def last_event(self) -> int:
        """The seq of the last event received (-1: none), which a resume asks the server to continue after."""
        return max((e["seq"] for e in self.events if "seq" in e), default=self.event_floor)

    async def reconnect(self, *, busy_timeout_s: float = 45.0) -> Stream:
        """After the connection dropped: open the stream again with its id and the last event received (the
        URL carries the id: Serve routes it to the replica holding it), resend every kept chunk from the
        server's `next_seq` on, and number on. `stream_id_busy` (the server has not yet seen the old
        connection break and drained it) is retried for `busy_timeout_s`. A resume that starts afresh
        (`started.resumed` false; `restored` when its alert state came from a checkpoint) resends nothing.
        ConnectionError when refused, or when the server needs chunks older than those kept."""
        o = self.opened
        start = {**o["start"], "stream_id": self.started["stream_id"], "last_event": self.last_event}
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                new = await open_stream(
                    o["url"], o["api_key"], start, timeout_s=o["timeout_s"], keep_bytes=self.keep_bytes
                )
                break
            except ConnectionError as exc:
                if "stream_id_busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        if new.started["resumed"] or new.started.get("restored"):  # its events number on from ours
            new.event_floor = self.last_event  # a second drop before its first event still resumes here
        if not new.started["resumed"]:
            return new
        resend = [(kind, seq, chunk) for kind, seq, chunk in self.sent if seq >= new.seq[kind]]
        for kind in new.seq:
            first = min((seq for k, seq, _ in resend if k == kind), default=self.seq[kind])
            if first > new.seq[kind]:
                await new.conn.close()
                raise ConnectionError(
                    f"the server needs {kind} chunks from {new.seq[kind]}; kept from {first}"
                )
        for kind, seq, chunk in resend:
            new._keep(kind, seq, chunk)
            await new.conn.send(chunk)
        new.seq = dict(self.seq)
        return new

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
        self.seq["frame"] += 1  # before sending, as for audio: a chunk whose send failed is kept, resent
        await self._send(header, payload)

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


async def open_stream(
    url: str, api_key: str | None, start: dict, *, timeout_s: float = 30.0, keep_bytes: int = KEEP_BYTES
) -> Stream:
    """Connect, send `start`, wait for `started`; ConnectionError with the server's reason if refused.
    `keep_bytes`: what the stream keeps of what it sends, for `reconnect` (0: a load generator, no resume)."""
    headers = {PROXY_TIMEOUT_HEADER: "0"}  # Ray's proxy would otherwise end the stream after 60 s
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if start.get("stream_id"):  # Serve routes it to the Gateway replica holding that stream (a resume)
        url = f"{url}?{urlencode({STREAM_ID_QUERY: start['stream_id']})}"
    # No permessage-deflate: samples and frames hardly compress; deflating big frames blocks the loop.
    kw = {"additional_headers": headers, "proxy": None, "max_size": 2**22, "compression": None}
    try:
        conn = await connect(url, open_timeout=timeout_s, **kw)
    except InvalidHandshake as exc:  # refused at the upgrade (an ingress's 401, 404, 503): no traceback
        raise ConnectionError(f"stream refused at the WebSocket upgrade: {exc}") from None
    with contextlib.suppress(ConnectionClosed):  # refused before reading it: the reason is queued to read
        await conn.send(json.dumps(start))
    try:
        first = json.loads(await asyncio.wait_for(conn.recv(), timeout_s))
    except Exception as exc:  # noqa: BLE001
        raise ConnectionError(f"stream refused: {conn.close_code} {conn.close_reason}") from exc
    if first.get("type") != "started":
        await conn.close()
        raise ConnectionError(f"stream refused: {first.get('code')}: {first.get('detail')}")
    opened = {"url": url.split("?")[0], "api_key": api_key, "start": start, "timeout_s": timeout_s}
    return Stream(conn, first, opened, keep_bytes)


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
            await send_recording(stream, rec, speed=speed, first_tick=min(done.values(), default=0),
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
