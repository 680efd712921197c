"""A retry under an Idempotency-Key whose first request is still running waits for it only within its own time
budget (budget.py): then 503 StillRunning + Retry-After, which the SDK and an integration engine retry under
the same key to get the first request's answer (docs/INTEGRATION.md, *Safe repetition*)."""

from __future__ import annotations

import asyncio
import json

from support.asgi import score_request
from support.gateway import wav_bytes

from preprocess_service import http_routes
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

GUARD_S = 10.0  # a retry that waits without bound fails the test here instead of hanging it


def body() -> bytes:
    parts = [
        b'--XX\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + wav_bytes(3.0) + b"\r\n",
        b'--XX\r\nContent-Disposition: form-data; name="age_group"\r\n\r\nadult\r\n',
        b"--XX--\r\n",
    ]
    return b"".join(parts)


def posted(*headers: tuple[bytes, bytes]):
    return score_request([{"type": "http.request", "body": body(), "more_body": False}], headers=headers)


def test_a_retry_behind_its_running_first_request_answers_503_still_running_within_its_budget():
    settings = GatewaySettings.load(
        {"triton_url": "127.0.0.1:1", "grpc_enabled": False, "answer_margin_s": 3.0}, {}
    )
    key = (b"idempotency-key", b"order-4711-pain-1")

    async def run() -> tuple[int, dict, dict]:
        service = ScoringService(settings)
        entered, release = asyncio.Event(), asyncio.Event()

        async def scoring(*args, **kwargs) -> object:  # the first request: still scoring
            entered.set()
            await release.wait()
            raise AssertionError("never released")

        service.score = scoring
        first = asyncio.create_task(http_routes.score(service, posted(key)))
        try:
            await asyncio.wait_for(entered.wait(), GUARD_S)
            # 3.5 s less the 3-s margin: half a second to wait for the first request, then the answer
            retry = http_routes.score(service, posted(key, (b"x-request-timeout-seconds", b"3.5")))
            response = await asyncio.wait_for(retry, GUARD_S)
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            await service.close()
        return response.status_code, dict(response.headers), json.loads(response.body)

    status, headers, answer = asyncio.run(run())
    assert status == 503 and answer["error"] == "StillRunning", answer
    assert "first request with this Idempotency-Key is still running" in answer["detail"]
    assert "send it again with the same key" in answer["detail"]
    assert int(headers["retry-after"]) >= settings.limits.retry_after_s
