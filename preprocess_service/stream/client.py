"""A Python client of `/v1/stream` (websockets): open a stream, send chunks, read events, resume a dropped
link (`Stream.reconnect`). Replaying a whole recording is `replay.py`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.budget import PROXY_TIMEOUT_HEADER
from preprocess_service.stream.protocol import (
    CLOSE_INTERNAL,
    CLOSE_LOST,
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
RESUMABLE = {None, 1001, CLOSE_LOST, 1012, CLOSE_INTERNAL, CLOSE_STALLED}  # and a stall (4408)
# Upgrade statuses that may pass: a gateway restarting or full (502-504), and 500, which is what Serve's proxy
# answers a WebSocket it could not hand to a replica (its router's queue full, a replica that failed): the
# gateway itself accepts every upgrade and refuses with a close code and its reason.
UPGRADE_RETRYABLE = (500, 502, 503, 504)


class StreamRefused(ConnectionError):
    """The stream was not opened. `retryable`: the gateway may take it in a moment (restarting or full, or
    still holding the stream id for a connection it has not yet seen break); not when it refused the request
    itself (the key, the start message, a limit of that key)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def ws_url(http_url: str) -> str:
    """ws://host:port/v1/stream from the gateway's http://host:port."""
    return http_url.rstrip("/").replace("https://", "wss://").replace("http://", "ws://") + STREAM_ROUTE


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
        server's `next_seq` on, and number on. What may pass in a moment (`stream_id_busy`: the server has
        not yet seen the old connection break and drained it; a gateway restarting or full; no connection)
        is retried, with backoff, for `busy_timeout_s`. A resume that starts afresh (`started.resumed` false;
        `restored` when its alert state came from a checkpoint) resends nothing. ConnectionError when
        refused, or when the server needs chunks older than those kept."""
        o = self.opened
        start = {**o["start"], "stream_id": self.started["stream_id"], "last_event": self.last_event}
        deadline, delay = time.monotonic() + busy_timeout_s, 0.2
        while True:
            try:
                new = await open_stream(
                    o["url"], o["api_key"], start, timeout_s=o["timeout_s"], keep_bytes=self.keep_bytes
                )
                break
            except (OSError, TimeoutError) as exc:  # a refused or failed connection (StreamRefused is one)
                if not getattr(exc, "retryable", True) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
        # Resumed, restored or afresh, the server numbers its events on after our last (registry.acquire), so
        # a second drop before the new connection's first event still asks from here, not as a first open.
        new.event_floor = self.last_event
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
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise StreamRefused(
            f"stream refused at the WebSocket upgrade: {exc}", status in UPGRADE_RETRYABLE
        ) from None
    with contextlib.suppress(ConnectionClosed):  # refused before reading it: the reason is queued to read
        await conn.send(json.dumps(start))
    try:
        first = json.loads(await asyncio.wait_for(conn.recv(), timeout_s))
    except Exception as exc:  # noqa: BLE001
        raise StreamRefused(
            f"stream refused: {conn.close_code} {conn.close_reason}", conn.close_code in RESUMABLE
        ) from exc
    if first.get("type") != "started":
        await conn.close()
        busy = first.get("code") in ("stream_id_busy", "over_limit")  # both say: retry
        raise StreamRefused(f"stream refused: {first.get('code')}: {first.get('detail')}", busy)
    opened = {"url": url.split("?")[0], "api_key": api_key, "start": start, "timeout_s": timeout_s}
    return Stream(conn, first, opened, keep_bytes)
