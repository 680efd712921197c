"""A retry under an Idempotency-Key whose first request is still running waits for it only within its own time
budget (budget.py): then 503 StillRunning + Retry-After, which the SDK and an integration engine retry under
the same key to get the first request's answer (docs/INTEGRATION.md, *Safe repetition*)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from support.asgi import score_request
from support.gateway import wav_bytes
from support.responses import make_response

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
        finally:  # the first request released and both clean-ups bounded: a hang fails here, not at 600 s
            release.set()
            first.cancel()
            await asyncio.wait_for(asyncio.gather(first, return_exceptions=True), GUARD_S)
            await asyncio.wait_for(service.close(), GUARD_S)
        return response.status_code, dict(response.headers), json.loads(response.body)

    status, headers, answer = asyncio.run(run())
    assert status == 503 and answer["error"] == "StillRunning", answer
    assert "first request with this Idempotency-Key is still running" in answer["detail"]
    assert "send it again with the same key" in answer["detail"]
    assert int(headers["retry-after"]) >= settings.limits.retry_after_s


async def until(condition: Callable[[], bool]) -> None:
    """Poll the loop (the routes parse on a worker thread) until `condition` holds, failing at GUARD_S."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), GUARD_S)


def test_retries_waiting_for_their_first_request_hold_no_request_slot():
    """Each retry of a still-running request held one of the replica's `max_in_flight` request slots while
    it waited, so a client repeating one request filled the replica and other callers got 429. Now a waiting
    retry gives its slot back, other requests are admitted, and every retry gets the first answer."""
    settings = GatewaySettings.load(
        {"triton_url": "127.0.0.1:1", "grpc_enabled": False, "limits": {"max_in_flight": 2}}, {}
    )
    key = (b"idempotency-key", b"order-4711-pain-1")
    scored, _ = make_response()

    async def run() -> tuple[list, list, object, list[str], tuple[int, int]]:
        service = ScoringService(settings)
        started: list[str] = []  # the requests that reached scoring
        release = asyncio.Event()

        async def scoring(request, **kwargs) -> object:
            started.append(request.request_id)
            await release.wait()
            return scored

        cache, waiting = service.clinical.idempotency, []
        wait = cache._wait

        async def counted(*args) -> object:  # a retry waiting for the first request
            waiting.append(1)
            return await wait(*args)

        service.score, cache._wait = scoring, counted
        try:
            first = asyncio.create_task(http_routes.score(service, posted(key)))
            await until(lambda: len(started) == 1)
            retries: list[asyncio.Task] = []
            for n in range(1, 4):  # one after another: the replica's one other slot takes one at a time
                retries.append(asyncio.create_task(http_routes.score(service, posted(key))))
                await until(lambda n=n: len(waiting) + sum(t.done() for t in retries) == n)
            other = asyncio.create_task(http_routes.score(service, posted((b"idempotency-key", b"other-1"))))
            await until(lambda: other.done() or len(started) == 2)
            held = service.limiter.in_flight  # the first request and the other one
            release.set()
            answers = await asyncio.wait_for(asyncio.gather(first, *retries), GUARD_S)
            other_answer = await asyncio.wait_for(other, GUARD_S)
            held = (held, service.limiter.in_flight)  # ... and none when all are answered
        finally:
            release.set()
            await service.close()
        replayed = [a.headers.get("idempotent-replayed") for a in answers]
        return [a.status_code for a in answers], replayed, other_answer, started, held

    statuses, replayed, other, started, held = asyncio.run(run())
    assert other.status_code == 200, other.body  # admitted: was 429 behind the waiting retries
    assert statuses == [200] * 4, statuses  # the retries were not refused either
    assert replayed == [None, "true", "true", "true"] and len(started) == 2 and held == (2, 0)
