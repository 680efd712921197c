"""A retry under the same Idempotency-Key sends an HL7 delivery that failed for a reason that may pass again.

It used to replay the first answer, failure included: the ORU^R01 never reached the chart unless the EHR
used a new key (and the clip was scored again). Clinical.answer (which HTTP and gRPC both call) runs with a
counting fake score() and the real MLLP client against real loopback listeners (support/mllp_listener.py).
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from clinical_samples import response
from support.mllp_listener import Listener

from preprocess_service import hl7v2
from preprocess_service.audit import AuditRecord
from preprocess_service.budget import RequestBudget
from preprocess_service.clinical import Answer, Clinical
from preprocess_service.protocol import MediaPart, ScoreRequest, ScoreResponse
from preprocess_service.settings import GatewaySettings

DELIVERED = "AA after 1 attempt(s)"


class Counted:
    """score(): the sample result, counting how often the clip was scored."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> ScoreResponse:
        self.calls += 1
        return response()


def clinical_for(port: int) -> Clinical:
    """As the gateway builds it: one attempt and one retry per delivery."""
    settings = {"hl7_mllp_target": f"127.0.0.1:{port}", "hl7_mllp_retries": 1}
    return Clinical(GatewaySettings.load(settings, {}))


async def ask(
    clinical: Clinical, score: Counted, budget: RequestBudget | None = None
) -> tuple[Answer, AuditRecord]:
    """The same request (same clip, same fields) with Idempotency-Key `key-1`, as each retry sends it."""
    request = ScoreRequest(audio=MediaPart(data=b"clip"), deliver_hl7=True, subject_ref="Patient/p-17")
    record = AuditRecord("/v1/score", "http", request.request_id)
    answer = await clinical.answer(score, request, fmt="json", key="key-1", record=record, budget=budget)
    return answer, record


@pytest.mark.parametrize(
    ("down", "failed"),
    [("refused", "UNREACHABLE after 2"), ("DROP", "UNREACHABLE after 2"), ("AE", "AE after 2")],
    ids=["engine not listening", "engine drops the connection", "engine answers AE"],
)
def test_a_retry_sends_a_failed_delivery_again_and_is_not_scored_again(down, failed):
    async def run():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
            clinical, score = clinical_for(sock.getsockname()[1]), Counted()
            listener = Listener(["AA"] if down == "refused" else [down, down, "AA"], sock=sock)
            if down == "refused":
                first, _ = await ask(clinical, score)
            async with listener:
                if down != "refused":
                    first, _ = await ask(clinical, score)
                sent_first = len(listener.received)
                again, record = await ask(clinical, score)
                sent_again = len(listener.received)
                third, third_record = await ask(clinical, score)
        return (
            first,
            again,
            record,
            third,
            third_record,
            score.calls,
            listener.received,
            sent_first,
            sent_again,
        )

    first, again, record, third, third_record, calls, received, sent_first, sent_again = asyncio.run(run())
    assert not first.replayed and first.delivery.startswith(f"{failed} attempt(s)"), first.delivery
    assert again.replayed and again.delivery == DELIVERED and sent_again == sent_first + 1
    assert record.replayed and record.redelivered  # the audit line says this replay sent it again
    assert again.result == first.result and calls == 1  # scored once
    # the same message each time: MSH-10 = the first request's id, so an engine can tell a repeat
    assert len(set(received)) == 1 and hl7v2.parse(received[-1]).msh.msh_10.value == response().request_id
    # the cache now holds the delivered outcome: replayed as is, not sent a third time
    assert third.replayed and third.delivery == DELIVERED and len(received) == sent_again
    assert not third_record.redelivered


def test_two_concurrent_retries_send_it_again_once_and_both_get_the_outcome():
    async def run():
        listener = Listener(["DROP", "DROP", "AA"])
        async with listener as target:
            clinical, score = clinical_for(target.port), Counted()
            first, _ = await ask(clinical, score)
            retries = await asyncio.gather(ask(clinical, score), ask(clinical, score))
        return first, retries, score.calls, len(listener.received)

    first, retries, calls, received = asyncio.run(run())
    assert first.delivery.startswith("UNREACHABLE after 2 attempt(s)") and calls == 1
    assert [(a.replayed, a.delivery) for a, _ in retries] == [(True, DELIVERED)] * 2
    assert received == 3 and sorted(r.redelivered for _, r in retries) == [False, True]


def test_a_retry_redelivers_within_its_own_time_budget_and_a_later_one_tries_again():
    async def run():
        listener = Listener(["DROP", "DROP", "AA"])
        async with listener as target:
            clinical, score = clinical_for(target.port), Counted()
            await ask(clinical, score)
            spent = await ask(clinical, score, RequestBudget(0.0, 3.0))  # nothing left to deliver in
            sent = len(listener.received)
            again, _ = await ask(clinical, score, RequestBudget(30.0, 33.0))
        return spent, sent, again, len(listener.received)

    (spent, record), sent, again, received = asyncio.run(run())
    # nothing was sent: the engine's reason stands (not "TIMEOUT after 0 attempt(s)"), no redelivery claimed
    assert spent.replayed and spent.delivery.startswith("UNREACHABLE after 2 attempt(s)") and sent == 2
    assert not record.redelivered
    assert again.delivery == DELIVERED and received == 3  # the next retry sends it


def test_a_retry_that_waited_for_the_first_request_sends_its_failed_delivery_again():
    """The client timed out and retried while the first request was still scoring: the answer it waited for
    carries a failed delivery, which it sends again instead of replaying."""

    class Slow(Counted):
        def __init__(self) -> None:
            super().__init__()
            self.go = asyncio.Event()

        async def __call__(self) -> ScoreResponse:
            await self.go.wait()
            return await super().__call__()

    async def run():
        listener = Listener(["DROP", "DROP", "AA"])
        async with listener as target:
            clinical, score = clinical_for(target.port), Slow()
            first = asyncio.ensure_future(ask(clinical, score))
            await asyncio.sleep(0.05)
            retry = asyncio.ensure_future(ask(clinical, score))  # waits for the first
            await asyncio.sleep(0.05)
            score.go.set()
            return await first, await retry, score.calls, len(listener.received)

    (first, _), (retry, record), calls, received = asyncio.run(run())
    assert first.delivery.startswith("UNREACHABLE after 2 attempt(s)") and calls == 1
    assert retry.replayed and retry.delivery == DELIVERED and record.redelivered and received == 3


def test_a_rejected_delivery_and_one_never_built_are_replayed_not_sent_again(monkeypatch):
    async def rejected():
        listener = Listener(["AR", "AA"])
        async with listener as target:
            clinical, score = clinical_for(target.port), Counted()
            first, _ = await ask(clinical, score)
            again, record = await ask(clinical, score)
        return first, again, record, len(listener.received)

    first, again, record, received = asyncio.run(rejected())
    assert first.delivery == "AR after 1 attempt(s): engine says no" and received == 1
    assert again.replayed and again.delivery == first.delivery and not record.redelivered

    builds = []
    clinical = clinical_for(9)
    render = clinical.render

    def broken(fmt, *args):
        if fmt == "hl7v2":
            builds.append(fmt)
            raise RuntimeError("hl7apy says no")
        return render(fmt, *args)

    monkeypatch.setattr(clinical, "render", broken)

    async def never_built():
        score = Counted()
        return await ask(clinical, score), await ask(clinical, score)

    (first, _), (again, record) = asyncio.run(never_built())
    assert first.delivery.startswith("NOT_SENT") and again.replayed and again.delivery == first.delivery
    assert builds == ["hl7v2"] and not record.redelivered
