"""A caller's `x-request-timeout-seconds` (budget.py): a short limit keeps a quarter of itself back for the
answer, not the whole 3-s margin (a 3-s limit left nothing: every try a 503 + Retry-After, a loop for a client
that honours it), and one below the minimum is refused before any work, as a doubled header is (400)."""

from __future__ import annotations

import asyncio
import json

import pytest
from support.asgi import score_request

from preprocess_service import http_routes
from preprocess_service.budget import MIN_TIMEOUT_S, RequestBudget
from preprocess_service.errors import TimeoutTooShort, status_of
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

TIMEOUT = "x-request-timeout-seconds"


@pytest.mark.parametrize(("asked", "budget_s"), [("3", 2.25), ("1", 0.75), ("12", 9.0), ("20", 17.0)])
def test_a_short_limit_keeps_a_quarter_of_itself_for_the_answer(asked, budget_s):
    budget = RequestBudget.of(60, 3, {TIMEOUT: asked})
    assert budget.total_s == pytest.approx(budget_s) and budget.timeout_s == float(asked)
    assert not budget.spent  # time left to score: a retry of the same request can pass


@pytest.mark.parametrize("asked", ["0.99", "0.5", "0.01"])
def test_a_limit_below_the_minimum_is_refused_naming_it_and_why(asked):
    with pytest.raises(TimeoutTooShort, match=r"below the minimum of 1 s") as info:
        RequestBudget.of(60, 3, {TIMEOUT: asked})
    assert status_of(info.value) == (400, "INVALID_ARGUMENT")
    assert "to answer before the proxy cuts the request" in str(info.value)
    assert getattr(info.value, "retry_after_s", None) is None and MIN_TIMEOUT_S == 1.0


def test_the_score_route_refuses_a_too_short_limit_400_without_retry_after():
    async def run():
        base = {"triton_url": "127.0.0.1:1", "grpc_enabled": False}
        service = ScoringService(GatewaySettings.load(base, {}))
        try:
            body = [{"type": "http.request", "body": b"--XX--\r\n", "more_body": False}]
            return await http_routes.score(service, score_request(body, headers=[(TIMEOUT.encode(), b"0.5")]))
        finally:
            await service.close()

    response = asyncio.run(run())
    answer = json.loads(response.body)
    assert response.status_code == 400 and answer["error"] == "TimeoutTooShort", answer
    assert "retry-after" not in response.headers and "minimum of 1 s" in answer["detail"]


def test_a_spent_budget_names_its_seconds_as_they_are():
    """A 1-s limit leaves 0.75 s: the refusal said "1 s time budget", rounding to whole seconds."""
    error = RequestBudget.of(60, 3, {TIMEOUT: "1.5"}).error("in decoding", 2)
    assert "this request's 1.12 s time budget ran out in decoding (the proxy ends it at 1.5 s" in str(error)
