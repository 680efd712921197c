"""A request with version pins checks them against Triton's repository index before any feature work
(pinning.py); that read is bounded by the request's time budget (budget.py), as the inference call is, not
by Triton's own deadline (`triton_timeout_s`, 10 s). A stand-in read that never answers plays a Triton too
slow to answer the index."""

from __future__ import annotations

import asyncio

from support.gateway import budget_refusal, wav_bytes

from preprocess_service.budget import RequestBudget
from preprocess_service.errors import status_of
from preprocess_service.pinning import FreshReads
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

GUARD_S = 10.0  # a read waited for without bound fails the test here instead of hanging it


def test_the_up_front_pin_check_gives_up_at_the_budget_with_the_budgets_reason():
    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})
    request = ScoreRequest(
        audio=MediaPart(data=wav_bytes(3.0)), age_group="adult", model_versions={"fusion": "1"}
    )
    decoded: list[int] = []

    async def never_answers() -> list[dict[str, str]]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def scenario() -> BaseException:
        service = ScoringService(settings)
        service.repository = FreshReads(never_answers)

        async def extract(*args) -> None:
            decoded.append(1)

        service._extract_in_thread = extract
        budget = RequestBudget(total_s=0.5, timeout_s=3.5)  # x-request-timeout-seconds 3.5, less the margin
        return await budget_refusal(service, request, budget, GUARD_S)

    error = asyncio.run(scenario())
    assert "time budget ran out checking the pinned model versions" in str(error)
    assert status_of(error) == (503, "UNAVAILABLE") and error.retry_after_s == settings.limits.retry_after_s
    assert not decoded  # refused before any feature work
