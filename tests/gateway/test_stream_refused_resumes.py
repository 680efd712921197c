"""A reconnect the route refuses is counted: `avpenet_gateway_stream_resumes_total{result="refused"}`.

Before, a reconnect (a start with `last_event`) refused for another start message, a URL id that is not the
start's, its id still open on an older connection or a replica limit was counted under no result: the
dashboard's reconnect panel showed nothing while bedside devices were being turned away. A first open refused
the same way is not a reconnect and stays out of the counter. The handler runs on a fake WebSocket, no server.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from preprocess_service.audit import key_id
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.metrics import RESUME_RESULTS, RESUMES
from preprocess_service.stream.protocol import CLOSE_BAD_START, CLOSE_OVER_LIMIT, Start
from preprocess_service.stream.route import StreamHub, serve_stream

TOKEN = "ward-7-token"
SID = "bed-30-refused"


class _Socket:
    """A WebSocket whose first message is `start`; it records how it was closed."""

    def __init__(self, start: dict, query: dict | None = None) -> None:
        self.headers = {"authorization": f"Bearer {TOKEN}"}
        self.query_params = query or {}
        self.start = start
        self.closed: int | None = None

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict:
        return {"type": "websocket.receive", "text": json.dumps(self.start)}

    async def send_json(self, data: dict) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        self.closed = code


def _hub(limits: StreamLimits) -> tuple[StreamHub, CollectorRegistry]:
    metrics = CollectorRegistry()
    settings = SimpleNamespace(streams=limits, limits=SimpleNamespace(max_pixels=10**7))
    service = SimpleNamespace(
        settings=settings, metrics=SimpleNamespace(registry=metrics), authenticate=lambda token: None
    )
    return StreamHub(service), metrics


def _start(**kw) -> dict:
    return {"type": "start", "mode": "audio", "age_group": "adult", "stream_id": SID, **kw}


def _resumes(metrics: CollectorRegistry) -> dict[str, float]:
    return {r: metrics.get_sample_value(f"{RESUMES}_total", {"result": r}) for r in RESUME_RESULTS}


def test_reconnects_refused_after_their_start_are_counted_as_refused_and_first_opens_are_not():
    hub, metrics = _hub(StreamLimits(max_streams=2))
    held, _ = hub.registry.acquire(Start.model_validate(_start()), SID, key_id(TOKEN))  # the old link: open

    async def connect(start: dict, query: dict | None = None) -> int | None:
        ws = _Socket(start, query)
        await serve_stream(hub, ws)
        return ws.closed

    async def reconnects() -> list[int | None]:
        closes = [
            await connect(_start(last_event=4)),  # stream_id_busy
            await connect(_start(last_event=4), {"stream_id": "bed-31-refused"}),  # URL id not the start's
            await connect(_start()),  # a first open of the busy id: refused, but not a reconnect
        ]
        hub.registry.detach(held)
        closes.append(await connect(_start(age_group="neonate", last_event=4)))  # another start than held
        hub.registry.acquire(Start.model_validate(_start(last_event=4)), SID, key_id(TOKEN))  # attached again
        hub.registry.acquire(Start.model_validate(_start(stream_id="bed-32-refused")), "bed-32-refused", "k")
        # replica full of attached streams (a detached one would give way to the new stream)
        closes.append(await connect(_start(stream_id="bed-33-refused", last_event=9)))
        await hub.close()
        return closes

    closes = asyncio.run(reconnects())
    assert closes == [CLOSE_OVER_LIMIT, CLOSE_BAD_START, CLOSE_OVER_LIMIT, CLOSE_BAD_START, CLOSE_OVER_LIMIT]
    assert _resumes(metrics) == {"resumed": 0.0, "restored": 0.0, "afresh": 0.0, "refused": 4.0}
