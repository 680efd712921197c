"""The SDK sends a request again while its HL7 delivery failed for a reason that may pass.

It used to hand the failed outcome back: the gateway sends the same message again (not scoring again) only
when the request comes again under the same Idempotency-Key, and a caller of `Client.score(deliver_hl7=True)`
had to know that and resend. Against loopback stand-ins (support/fake_gateway.py) that answer 200 with a
failed delivery outcome, then a delivered one, as the gateway does (tests/gateway/test_hl7_redelivery.py).
"""

from __future__ import annotations

import pytest
from clinical_samples import response
from support.fake_gateway import FakeGateway, FakeGrpcGateway, delivered

from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client, RequestError, ScoreError

DELIVERED = "AA after 1 attempt(s)"
DOWN = "UNREACHABLE after 3 attempt(s): ConnectionRefusedError"


@pytest.fixture
def request_() -> ScoreRequest:
    return ScoreRequest(
        audio=MediaPart(data=b"RIFF....", filename="a.wav"), deliver_hl7=True, subject_ref="Patient/p-17"
    )


def scored(delivery: str, replayed: bool = False) -> tuple:
    return delivered(response().model_dump_json(), delivery, replayed)


def score(answers: list[tuple], request: ScoreRequest, retries: int = 3) -> tuple:
    gateway = FakeGateway(answers)
    try:
        return Client(gateway.url, retries=retries, backoff_s=0.01).score(request), gateway.seen
    finally:
        gateway.close()


@pytest.mark.parametrize(
    "failed",
    [DOWN, "TIMEOUT after 1 attempt(s): no ACK within 5.0 s", "BAD_ACK after 3 attempt(s): frame without",
     "AE after 3 attempt(s): engine says no", "CE after 3 attempt(s): busy"],
    ids=["unreachable", "timeout", "bad ack", "AE", "CE"],
)  # fmt: skip
def test_a_delivery_that_may_pass_is_sent_again_under_the_same_key_and_request_id(request_, failed):
    result, seen = score([scored(failed), scored(failed, True), scored(DELIVERED, True)], request_)
    assert len(seen) == 3 and result.hl7_delivery == DELIVERED
    assert result.hl7_deliveries == (failed, failed, DELIVERED) and result.delivery_rounds == 3
    assert result.attempts == 3 and result.replayed and result.score.score == response().score
    assert len({s["idempotency-key"] for s in seen}) == 1
    assert {s["x-request-id"] for s in seen} == {request_.request_id}


@pytest.mark.parametrize(
    "final",
    [DELIVERED, "AR after 1 attempt(s): engine says no", "CR after 1 attempt(s): no",
     "NOT_SENT: the HL7 message could not be built (ValueError)"],
    ids=["delivered", "AR", "CR", "not sent"],
)  # fmt: skip
def test_a_delivered_rejected_or_unbuildable_message_is_not_sent_again(request_, final):
    result, seen = score([scored(final), scored(DELIVERED, True)], request_)
    assert len(seen) == 1 and result.hl7_delivery == final and result.delivery_rounds == 1


def test_retries_0_sends_once_and_spent_retries_return_the_last_outcome(request_):
    result, seen = score([scored(DOWN), scored(DELIVERED, True)], request_, retries=0)
    assert len(seen) == 1 and result.hl7_delivery == DOWN and result.attempts == 1
    result, seen = score([scored(DOWN)], request_, retries=2)  # never delivered: the scored answer stands
    assert len(seen) == 3 and result.hl7_deliveries == (DOWN,) * 3 and result.score is not None


def test_resends_share_the_retry_budget_and_a_failed_resend_keeps_the_scored_answer(request_):
    busy = (503, '{"error": "Overloaded", "detail": "busy", "request_id": "r"}')
    result, seen = score([busy, scored(DOWN), scored(DELIVERED, True)], request_, retries=2)
    assert len(seen) == 3 and result.hl7_delivery == DELIVERED and result.delivery_rounds == 2
    gateway = FakeGateway([scored(DOWN)], stop_after=1)  # the gateway gone after scoring it
    try:
        result = Client(gateway.url, retries=2, backoff_s=0.01, timeout_s=2).score(request_)
    finally:
        gateway.close()
    assert len(gateway.seen) == 3 and result.hl7_delivery == DOWN and result.score.score == response().score
    assert result.attempts == 3  # the sends after the answer count too
    result, seen = score([scored(DOWN), busy, busy], request_, retries=2)
    assert len(seen) == 3 and result.hl7_delivery == DOWN and result.attempts == 3


def test_without_deliver_hl7_an_outcome_is_never_a_reason_to_resend(request_):
    unasked = request_.model_copy(update={"deliver_hl7": False})
    result, seen = score([scored(DOWN), scored(DELIVERED)], unasked)
    assert len(seen) == 1 and result.hl7_delivery == DOWN


def test_grpc_sends_a_failed_delivery_again_under_the_same_key_and_request_id(request_):
    def answer(delivery: str):
        message = response().to_proto()
        message.hl7_delivery = delivery
        return message

    cases = (([DOWN, DELIVERED], 2, DELIVERED), (["AR after 1 attempt(s)", DOWN], 1, "AR"))
    for answers, sends, final in cases:
        gateway = FakeGrpcGateway([answer(a) for a in answers])
        client = Client(gateway.target, grpc=True, retries=3, backoff_s=0.01)
        try:
            result = client.score(request_)
        finally:
            client.close()
            gateway.close()
        assert len(gateway.seen) == sends and result.hl7_delivery.startswith(final)
        assert len({md["idempotency-key"] for md, _ in gateway.seen}) == 1
        assert {rid for _, rid in gateway.seen} == {request_.request_id}


@pytest.mark.parametrize("grpc", [False, True])
def test_a_delivery_without_a_patient_is_refused_before_anything_is_sent(request_, grpc):
    """The gateway refuses it (422 / INVALID_ARGUMENT): the ORU^R01's PID-3 would name no patient. It was a
    bare ValueError, which an integrator catching the ScoreError that Client.score documents did not catch:
    now a RequestError, a ScoreError with the gateway's error class, and still a ValueError."""
    gateway = FakeGrpcGateway([]) if grpc else FakeGateway([scored(DELIVERED)])
    client = Client(gateway.target if grpc else gateway.url, grpc=grpc, retries=0)
    try:
        with pytest.raises(
            ScoreError, match=r"deliver=hl7v2 \(gRPC deliver_hl7\) needs subject_ref.*PID-3"
        ) as info:
            client.score(request_.model_copy(update={"subject_ref": None}))
        with pytest.raises(ScoreError, match="BAD_REQUEST: fmt must be one of json, .*, not 'xml'"):
            client.score(request_, fmt="xml")
    finally:
        client.close()
        gateway.close()
    assert gateway.seen == []
    assert isinstance(info.value, RequestError) and isinstance(info.value, ValueError)  # as it was
    assert (info.value.status, info.value.error) == ("BAD_REQUEST", "InvalidRequest")


@pytest.mark.parametrize("grpc", [False, True])
def test_a_request_id_the_gateway_refuses_is_refused_before_anything_is_sent(request_, grpc):
    """gRPC refused it with INVALID_ARGUMENT after sending; over HTTP the gateway replaced it with a fresh id
    on every attempt, so a retry that reached another replica filed a second Observation."""
    gateway = FakeGrpcGateway([]) if grpc else FakeGateway([scored(DELIVERED)])
    client = Client(gateway.target if grpc else gateway.url, grpc=grpc, retries=0)
    try:
        with pytest.raises(RequestError, match="BAD_REQUEST: request_id must be 1-64 letters"):
            client.score(request_.model_copy(update={"request_id": "ward 7/req#1"}))
    finally:
        client.close()
        gateway.close()
    assert gateway.seen == []
