"""A Gateway replica holding all the streams it may hold still answers: probes, uploads, and the next stream
with its reason. Real Ray Serve + real Triton (the session stack, deployed from serve_config.yaml).

A WebSocket holds one of Ray's request slots for as long as its stream runs. With the Gateway's former
`max_ongoing_requests` (32) the 33rd stream's handshake, /healthz and every upload waited in Ray's queue
until a stream ended; `serve_config.check_capacity` now keeps streams + admitted requests + headroom under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest
import requests
from support.gateway import API_KEY, STREAM_KEYS, wav_bytes
from websockets.exceptions import ConnectionClosed

from preprocess_service.client import score_http
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.stream.client import open_stream, ws_url
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.metrics import HELD

pytestmark = pytest.mark.integration
START = {"type": "start", "mode": "audio", "age_group": "adult"}
OPEN_TIMEOUT_S = 5.0  # the session stack closes a stream silent for 8 s (conftest): all of it fits inside


def _held(http_url: str) -> float:
    text = requests.get(f"{http_url}/metrics", timeout=5).text
    return float(re.search(rf"^{HELD} (\S+)$", text, re.M)[1])


def test_a_replica_holding_its_most_streams_still_answers_probes_uploads_and_the_next_stream(gateway_stack):
    url, most = gateway_stack.http_url, StreamLimits().max_streams  # the session stack keeps the default
    per_key = -(-(most + 4) // len(STREAM_KEYS))

    async def scenario():
        keys = [k for k in STREAM_KEYS for _ in range(per_key)][: most + 4]
        outcomes = await asyncio.gather(
            *(open_stream(ws_url(url), key, START, timeout_s=OPEN_TIMEOUT_S) for key in keys),
            return_exceptions=True,
        )
        opened = [s for s in outcomes if not isinstance(s, BaseException)]
        refused = [str(e) for e in outcomes if isinstance(e, BaseException)]
        try:
            health = await asyncio.to_thread(requests.get, f"{url}/healthz", timeout=OPEN_TIMEOUT_S)
            request = ScoreRequest(audio=MediaPart(data=wav_bytes(2.0), filename="a.wav"), age_group="adult")
            scored = await asyncio.to_thread(score_http, url, request, api_key=API_KEY, timeout_s=5)
            held = await asyncio.to_thread(_held, url)
        finally:  # ended, not dropped: a dropped stream stays held (resumable) and would crowd later tests
            for stream in opened:
                with contextlib.suppress(ConnectionClosed):  # already closed: the failure is reported above
                    await stream.control(type="end")
            await asyncio.gather(*(stream.receive_all() for stream in opened))
        return opened, refused, health, scored, held

    opened, refused, health, scored, held = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert held == most  # the replica's own limit was reached (streams other tests left resumable count)
    assert len(opened) > 32  # the former Ray cap
    assert refused and all(f"this replica holds {most} streams" in r for r in refused), refused[:3]
    assert health.status_code == 200
    assert 0.0 <= scored.score <= 10.0
