"""MLLP delivery against real MLLP listeners on loopback: one that ACKs, one that NACKs, one that drops."""

from __future__ import annotations

import asyncio

import pytest
from clinical_samples import response
from support.mllp_listener import Listener

from preprocess_service import fhir, hl7v2, mllp


def message() -> str:
    return hl7v2.oru_r01(response(), fhir.Context(subject_ref="Patient/p-17"))


def test_acked_message_is_delivered_once():
    async def run():
        listener = Listener(["AA"])
        async with listener as target:
            delivery = await mllp.send(target, message(), "req-7f3a")
        return listener, delivery

    listener, delivery = asyncio.run(run())
    assert delivery == mllp.Delivery("AA", 1)
    assert len(listener.received) == 1 and hl7v2.parse(listener.received[0]).name == "ORU_R01"


def test_reject_is_not_retried_and_error_is_retried_until_accepted():
    async def run(codes):
        listener = Listener(codes)
        async with listener as target:
            try:
                return listener, await mllp.send(target, message(), "req-7f3a")
            except mllp.DeliveryError as exc:
                return listener, exc

    listener, result = asyncio.run(run(["AR"]))
    assert isinstance(result, mllp.DeliveryError) and result.code == "AR" and result.attempts == 1
    assert "engine says no" in result.detail and len(listener.received) == 1
    listener, result = asyncio.run(run(["AE", "DROP", "AA"]))
    assert result == mllp.Delivery("AA", 3)
    listener, result = asyncio.run(run(["AE"]))
    assert isinstance(result, mllp.DeliveryError) and result.attempts == 3 and len(listener.received) == 3


def test_unreachable_engine_fails_after_retries(refused_port):
    target = mllp.MllpTarget("127.0.0.1", refused_port, timeout_s=1.0, retries=1, backoff_s=0.01)
    with pytest.raises(mllp.DeliveryError) as info:
        asyncio.run(mllp.send(target, message(), "req-7f3a"))
    assert info.value.code == "UNREACHABLE" and info.value.attempts == 2
    assert mllp.MllpTarget.parse("engine.example:2575").port == 2575
    with pytest.raises(ValueError, match="host:port"):
        mllp.MllpTarget.parse("engine.example")
    assert mllp.MllpTarget.parse("[::1]:2575").host == "::1"
    for bad, why in [("engine.example:70000", "1-65535"), ("::1", "brackets"), ("fe80::1:2575", "brackets")]:
        with pytest.raises(ValueError, match=why):  # were read as host ':' port 1, host 'fe80::1' ...
            mllp.MllpTarget.parse(bad)


# ACKs as engines send them: another HL7 version, only what they need, LF between segments.
ENGINE_ACKS = {
    "v2.3.1, MSH-9 ACK^R01": "MSH|^~\\&|ENGINE|HOSP|||20260501101500||ACK^R01|A1|P|2.3.1\rMSA|AA|{id}\r",
    "MSH-9 ACK alone, no MSH-7": "MSH|^~\\&|ENGINE|HOSP|AVPENET|AVPENET|||ACK|A1|P|2.6\rMSA|AA|{id}\r",
    "v2.9, LF": "MSH|^~\\&|ENGINE|HOSP|||20260501101500||ACK|A1|P|2.9\nMSA|CA|{id}\n",
}


@pytest.mark.parametrize("ack", ENGINE_ACKS.values(), ids=ENGINE_ACKS.keys())
def test_an_engines_own_accepting_ack_is_delivered_once(ack):
    """A strict parse took these for bad ACKs: the message went out 3 times and was reported as failed."""

    async def run():
        listener = Listener(["AA"], answer=lambda control_id: ack.format(id=control_id))
        async with listener as target:
            return listener, await mllp.send(target, message(), "req-7f3a")

    listener, delivery = asyncio.run(run())
    assert delivery.attempts == 1 and delivery.code in ("AA", "CA") and len(listener.received) == 1


def test_ack_reading_takes_the_reason_and_refuses_what_is_no_ack():
    err = "MSH|^~\\&|ENGINE|HOSP|||||ACK|A1|P|2.6\rMSA|AE|req-1\rERR||||E|||database down\r"
    assert mllp.ack_code(err, "req-1") == ("AE", "E; database down")  # no MSA-3: the ERR segment's text
    assert mllp.ack_code(hl7v2.ack("req-1", "AR", "unknown patient"), "req-1") == ("AR", "unknown patient")
    for bad, why in [
        (hl7v2.ack("req-2"), "not this one"),
        ("MSH|^~\\&|ENGINE|HOSP|||||ACK|A1|P|2.6\r", "no MSA"),
        ("MSH|^~\\&|ENGINE|HOSP|||||ACK|A1|P|2.6\rMSA|OK|req-1\r", "not an acknowledgement code"),
        ("HTTP/1.1 400 Bad Request", "MSH"),
    ]:
        with pytest.raises(ValueError, match=why):
            mllp.ack_code(bad, "req-1")


def test_a_message_that_cannot_be_built_is_reported_not_raised(monkeypatch):
    """The scored answer is never lost to the HL7 build (it used to raise out of `deliver`: a 500)."""
    from preprocess_service.clinical import Clinical
    from preprocess_service.protocol import MediaPart, ScoreRequest
    from preprocess_service.settings import GatewaySettings

    clinical = Clinical(GatewaySettings.load({"hl7_mllp_target": "127.0.0.1:9"}, {}))

    def broken(*_args):
        raise RuntimeError("hl7apy says no")

    monkeypatch.setattr(clinical, "render", broken)
    request = ScoreRequest(audio=MediaPart(data=b"x"), deliver_hl7=True, subject_ref="Patient/p-17")
    outcome = asyncio.run(clinical.deliver(response(), request))
    assert outcome == "NOT_SENT: the HL7 message could not be built (RuntimeError)"


def test_every_segment_ends_with_cr_in_the_http_body_and_the_mllp_payload():
    """The last segment had no <CR> (hl7apy's to_er7 separates segments): HL7 v2 terminates every segment
    with CR, and a receiver may drop or refuse an unterminated last OBX. The frame is now
    <VT>MSH...<CR>...OBX...<CR><FS><CR>."""
    from preprocess_service.clinical import Clinical
    from preprocess_service.protocol import MediaPart, ScoreRequest
    from preprocess_service.settings import GatewaySettings

    request = ScoreRequest(audio=MediaPart(data=b"x"), deliver_hl7=True, subject_ref="Patient/p-17")

    async def run():
        listener = Listener(["AA"])
        async with listener as target:
            clinical = Clinical(GatewaySettings.load({"hl7_mllp_target": f"127.0.0.1:{target.port}"}, {}))
            body = clinical.render("hl7v2", response(), request).body
            outcome = await clinical.deliver(response(), request)
        return body, outcome, listener.received

    body, outcome, (payload,) = asyncio.run(run())
    assert outcome == "AA after 1 attempt(s)" and payload == body
    for text in (body, payload, hl7v2.ack("req-7f3a")):
        segments = text.split("\r")
        assert segments[-1] == "" and all(seg[:3].isalnum() for seg in segments[:-1]), segments[-2:]
    assert mllp.frame(body).endswith(b"\r\x1c\r")
