"""The `/v1/stream` WebSocket handler: authenticate, read the start message, admit, run the session.

The Gateway ingress declares the route (deployments.py) and calls `serve_stream`. Refusals are sent as an
`error` event with the full reason, then a close with a 4xxx code (CLOSE_* in protocol.py). One audit line per
stream (route, key id, stream id, close code), never media. A stream id is the caller's: the registry, the
checkpoint store and the router name a stream by its id and the API key id (affinity.caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from preprocess_service import audit
from preprocess_service.auth import bearer_token
from preprocess_service.budget import PROXY_TIMEOUT_HEADER
from preprocess_service.service import ScoringService
from preprocess_service.stream import checkpoints
from preprocess_service.stream.affinity import caller
from preprocess_service.stream.metrics import StreamMetrics
from preprocess_service.stream.protocol import (
    CLOSE_BAD_START,
    CLOSE_LOST,
    CLOSE_OVER_LIMIT,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNPROCESSABLE,
    STREAM_ID_QUERY,
    STREAM_ROUTE,
    StreamRejected,
    parse_start,
)
from preprocess_service.stream.registry import StreamRegistry
from preprocess_service.stream.session import Session

log = logging.getLogger("avpenet.gateway.stream")
# How often expired detached streams are forgotten: one is held at most `resume_ttl_s` + this.
SWEEP_S = 5.0
# The close after the registry refuses a stream (its error event's code -> close code): a limit or the id
# still open elsewhere is retried (4429), any other refusal is the start message's (4400). The README's error
# code table is checked against it (tests/gateway/test_stream_doc.py).
REFUSAL_CLOSES = {
    "over_limit": CLOSE_OVER_LIMIT,
    "stream_id_busy": CLOSE_OVER_LIMIT,
    "bad_start": CLOSE_BAD_START,
    "unprocessable": CLOSE_UNPROCESSABLE,  # a resume of a stream ended 4500 (poison.py)
}


class StreamHub:
    """What the replica's streams share: the scoring service (keys, Triton), the registry, the metrics and
    the checkpoint store every replica writes its streams' alert state to."""

    def __init__(
        self,
        service: ScoringService,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`clock`, `sleep`: of the resume window and the sweep (tests drive them)."""
        self.service = service
        self.registry = StreamRegistry(service.settings.streams, service.settings.limits.max_pixels, clock)
        self.metrics = StreamMetrics(service.metrics.registry)
        self.checkpoints = checkpoints.connect(service.settings.streams.resume_ttl_s)
        self.sleep = sleep
        self._sweeper: asyncio.Task | None = None

    def ensure_sweeping(self) -> None:
        """Start the periodic sweep on the running loop (the replica's first stream). Before it, a stream
        never resumed was forgotten only when another stream opened: on a quiet replica its tracker stayed
        open and `streams_held` counted it."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self.sweep_forever(), name="stream-sweep")

    async def sweep_forever(self) -> None:
        """Every SWEEP_S: forget the streams past their resume window; set `streams_held` to what is left."""
        while True:
            await self.sleep(SWEEP_S)
            try:
                self.registry.sweep()
            except Exception:  # noqa: BLE001 (a tracker that failed to close: the next sweep goes on)
                log.exception("stream sweep failed")
            self.metrics.held.set(self.registry.count())

    async def close(self) -> None:
        """The replica stops: end the sweep (a task left pending is reported as destroyed at exit)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


async def _refuse(ws, hub: StreamHub, code: int, error: str, detail: str) -> int:
    try:
        await ws.send_json({"type": "error", "code": error, "detail": detail, "fatal": True})
        await ws.close(code, detail.encode()[:120].decode(errors="ignore"))
    except Exception:  # noqa: BLE001 (client already gone)
        pass
    return code


async def _refuse_reconnect(ws, hub: StreamHub, reconnect: bool, code: int, error: str, detail: str) -> int:
    """Refuse a stream whose start message was read; a reconnect's refusal (another start, its id still
    open, a limit) is counted, `resumes_total{result="refused"}`: before, reconnects refused 4400 or 4429
    showed under no result, so the resume panel could not tell a refusal storm from no reconnects at all."""
    if reconnect:
        hub.metrics.resumes.labels("refused").inc()
    return await _refuse(ws, hub, code, error, detail)


async def serve_stream(hub: StreamHub, ws) -> None:
    """One monitoring connection, from the handshake to the close."""
    header = ws.headers.get("authorization")
    record = audit.AuditRecord(STREAM_ROUTE, "websocket", uuid.uuid4().hex, api_key_id=caller(header))
    hub.ensure_sweeping()
    await ws.accept()
    code = CLOSE_LOST  # unless it returns: Serve cancelled the handler (its request timeout), a lost link
    try:
        code = await _admit_and_run(hub, ws, bearer_token(header), record)
    finally:  # counted and audited however it ended
        hub.metrics.closes.labels(str(code)).inc()
        hub.metrics.held.set(hub.registry.count())
        record.emit(code)


async def _admit_and_run(hub: StreamHub, ws, token: str | None, record: audit.AuditRecord) -> int:
    limits = hub.registry.limits
    try:
        hub.service.authenticate(token)
    except Exception as exc:  # noqa: BLE001 (Unauthenticated: the reason names what to send)
        hub.service.refused(exc, "websocket")
        return await _refuse(ws, hub, CLOSE_UNAUTHENTICATED, "unauthenticated", str(exc))
    try:
        msg = await asyncio.wait_for(ws.receive(), limits.start_timeout_s)
        if msg.get("text") is None:
            raise StreamRejected("bad_start", "the first message must be the JSON start message (text)")
        start = parse_start(msg["text"])
    except TimeoutError:
        return await _refuse(
            ws, hub, CLOSE_BAD_START, "bad_start", f"no start message within {limits.start_timeout_s:g} s"
        )
    except StreamRejected as exc:
        return await _refuse(ws, hub, CLOSE_BAD_START, exc.code, exc.detail)
    reconnect = start.stream_id is not None and start.last_event >= 0  # after events: a first open is not
    hint = ws.query_params.get(STREAM_ID_QUERY)
    if hint is not None and hint != start.stream_id:
        detail = f"the URL's {STREAM_ID_QUERY} must equal the start message's stream_id (it routes a resume)"
        return await _refuse_reconnect(ws, hub, reconnect, CLOSE_BAD_START, "bad_start", detail)
    sid = start.stream_id or uuid.uuid4().hex
    record.request_id = sid
    restore = await hub.checkpoints.get(sid, record.api_key_id) if reconnect else None
    try:
        entry, resumed = hub.registry.acquire(start, sid, record.api_key_id, restore)
    except StreamRejected as exc:
        code = REFUSAL_CLOSES.get(exc.code, CLOSE_BAD_START)
        return await _refuse_reconnect(ws, hub, reconnect, code, exc.code, exc.detail)
    how = "resumed" if resumed else "restored" if entry.restored else "afresh" if reconnect else "opened"
    if reconnect:  # did it find its stream's state here, or its alert state in a checkpoint?
        hub.metrics.resumes.labels(how).inc()
    mode = start.mode
    hub.metrics.active.labels(mode).inc()
    hub.metrics.held.set(hub.registry.count())
    log.info("stream %s of %s %s (%s)", sid, record.api_key_id, how, mode)
    try:
        session = Session(ws, hub, entry, resumed, start.last_event)
        if PROXY_TIMEOUT_HEADER not in ws.headers:
            session.notes.append({
                "type": "error", "code": "proxy_timeout",
                "detail": f"send the header {PROXY_TIMEOUT_HEADER}: 0, or the HTTP proxy ends this "
                "connection after its request timeout (the stream can then be resumed)",
            })  # fmt: skip
        return await session.run()
    finally:
        hub.metrics.active.labels(mode).dec()
        if entry.finished:  # ended: nothing to resume
            hub.checkpoints.drop(sid, entry.key_id)
        else:  # its alert state as it is now, for a reconnect that reaches another replica
            hub.checkpoints.put(sid, entry.key_id, entry.checkpoint(), now=True)
        hub.registry.detach(entry)
        log.info("stream %s of %s closed", sid, entry.key_id)
