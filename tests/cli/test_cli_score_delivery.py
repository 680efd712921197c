"""`avpenet score --deliver hl7v2`: each request asks the gateway to send its result to the interface engine
over MLLP (the form field `deliver=hl7v2`, gRPC `deliver_hl7`), and the outcome of each delivery round the
SDK made shows under the clip's row, in --json and on stderr. Before, `avpenet score` had no delivery option:
an interface analyst could not test the HL7 feed from the command line. Against loopback stand-ins
(support/fake_gateway.py) that answer with an outcome in `X-HL7-Delivery`, as the gateway does."""

from __future__ import annotations

import json

import pytest
from support.fake_gateway import FakeGateway, FakeGrpcGateway, delivered, placeholder_wavs
from support.responses import make_response

from cli.main import main

DELIVERED = "AA after 1 attempt(s)"
DOWN = "UNREACHABLE after 3 attempt(s): ConnectionRefusedError"
DELIVER = ("--deliver", "hl7v2", "--subject", "Patient/p-17")  # PID-3 names the patient
NO_ENGINE = "deliver=hl7v2 needs an interface engine: the gateway has no hl7_mllp_target configured"


@pytest.fixture()
def wavs(tmp_path):
    return placeholder_wavs(tmp_path)


def scored(delivery: str, replayed: bool = False) -> tuple:
    return delivered(make_response(3)[0].model_dump_json(), delivery, replayed)


def score(gateway: FakeGateway, *argv: str) -> int:
    try:
        return main(["score", *argv, "--url", gateway.url])
    finally:
        gateway.close()


def test_each_request_carries_the_delivery_field_and_the_table_shows_the_outcome(wavs, capsys):
    gateway = FakeGateway([scored(DELIVERED)], keep_bodies=True)
    code = score(gateway, *map(str, wavs), *DELIVER)
    out = capsys.readouterr().out
    field = b'name="deliver"\r\n\r\nhl7v2\r\n'
    assert code == 0 and len(gateway.bodies) == 2 and all(field in body for body in gateway.bodies)
    lines = out.splitlines()
    for wav in wavs:  # the outcome on the line under each clip's row
        row = next(i for i, line in enumerate(lines) if line.startswith(wav.name))
        assert lines[row + 1].strip() == f"HL7 delivery: {DELIVERED}"
    unasked = FakeGateway([scored("")], keep_bodies=True)
    assert score(unasked, str(wavs[0])) == 0 and b'name="deliver"' not in unasked.bodies[0]
    assert "HL7 delivery" not in capsys.readouterr().out


def test_a_failed_then_delivered_sequence_shows_every_round(wavs, capsys):
    answers = [scored(DOWN), scored(DOWN, True), scored(DELIVERED, True)]
    gateway = FakeGateway(answers)
    code = score(gateway, str(wavs[0]), *DELIVER, "--retries", "3")
    out = capsys.readouterr().out
    assert code == 0 and len(gateway.seen) == 3
    assert len({seen["idempotency-key"] for seen in gateway.seen}) == 1  # the gateway sends it again
    rounds = [line.strip() for line in out.splitlines() if "HL7 delivery" in line]
    assert rounds == [
        f"HL7 delivery 1/3: {DOWN}",
        f"HL7 delivery 2/3: {DOWN}",
        f"HL7 delivery 3/3: {DELIVERED}",
    ]
    code = score(FakeGateway(answers), str(wavs[0]), *DELIVER, "--json")
    answer = json.loads(capsys.readouterr().out)
    assert code == 0 and answer["score"] == make_response(3)[0].score
    assert answer["hl7_delivery"] == DELIVERED and answer["delivery_rounds"] == 3
    assert answer["hl7_deliveries"] == [DOWN, DOWN, DELIVERED]


def test_a_delivery_never_made_fails_the_run_and_says_so(wavs, capsys):
    code = score(FakeGateway([scored(DOWN)]), str(wavs[0]), *DELIVER, "--retries", "1")
    out, err = capsys.readouterr()
    assert code == 1 and f"HL7 delivery 2/2: {DOWN}" in out  # scored, shown, not delivered
    assert f"a.wav: HL7 not delivered: {DOWN} (round 2/2)" in err


def test_a_gateway_without_an_interface_engine_refuses_and_the_run_stops(wavs, capsys):
    refused = (422, json.dumps({"error": "DeliveryNotConfigured", "detail": NO_ENGINE, "request_id": "r"}))
    gateway = FakeGateway([refused])
    code = score(gateway, *map(str, wavs), *DELIVER)
    err = capsys.readouterr().err
    assert code == 1 and NO_ENGINE in err and "refused --deliver" in err
    assert (
        len(gateway.seen) == 1 and "stopped after 0 of 2 clips (1 not sent)" in err
    )  # each would be refused


def test_a_grpc_gateway_without_an_interface_engine_stops_the_run_by_the_error_class(wavs, capsys):
    """The run stopped on FAILED_PRECONDITION, a gRPC code; it now stops on the class the gateway names in its
    `avpenet-error` trailer, DeliveryNotConfigured, as over HTTP."""
    import grpc

    trailing = (("x-request-id", "r"), ("avpenet-error", "DeliveryNotConfigured"))
    gateway = FakeGrpcGateway([(grpc.StatusCode.FAILED_PRECONDITION, NO_ENGINE, trailing)])
    try:
        code = main(["score", *map(str, wavs), "--grpc", "--url", gateway.target, *DELIVER])
    finally:
        gateway.close()
    err = capsys.readouterr().err
    assert code == 1 and NO_ENGINE in err and "refused --deliver" in err
    assert len(gateway.seen) == 1 and "stopped after 0 of 2 clips (1 not sent)" in err


def test_beside_documents_the_outcome_goes_to_stderr(wavs, capsys):
    message = "MSH|^~\\&|AVPENET|||||20261205||ORU^R01|id-1|P|2.5.1"
    answer = (200, message, {"type": "x-application/hl7-v2+er7", "headers": {"X-HL7-Delivery": DELIVERED}})
    code = score(FakeGateway([answer]), str(wavs[0]), *DELIVER, "--format", "hl7v2")
    out, err = capsys.readouterr()
    assert code == 0 and "ORU^R01" in out and "HL7 delivery" not in out
    assert f"a.wav: HL7 delivery: {DELIVERED}" in err


def test_grpc_asks_for_delivery_and_shows_the_outcome(wavs, capsys):
    message = make_response(3)[0].to_proto()
    message.hl7_delivery = DELIVERED
    gateway = FakeGrpcGateway([message])
    try:
        code = main(["score", str(wavs[0]), "--grpc", "--url", gateway.target, *DELIVER])
    finally:
        gateway.close()
    assert code == 0 and [(r.deliver_hl7, r.subject_ref) for r in gateway.requests] == [
        (True, "Patient/p-17")
    ]
    assert f"HL7 delivery: {DELIVERED}" in capsys.readouterr().out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_delivery_without_a_patient_is_refused_before_any_clip_is_sent(wavs, capsys, protocol):
    """The gateway refuses it (422 / INVALID_ARGUMENT: the ORU^R01's PID-3 would name no patient); the CLI
    says so before sending anything, naming the option that is missing."""
    gateway = FakeGateway([scored(DELIVERED)]) if protocol == "http" else FakeGrpcGateway([])
    target = gateway.url if protocol == "http" else gateway.target
    try:
        code = main(
            [
                "score",
                *map(str, wavs),
                "--url",
                target,
                "--deliver",
                "hl7v2",
                *(["--grpc"] * (protocol == "grpc")),
            ]
        )
    finally:
        gateway.close()
    err = capsys.readouterr().err
    assert code == 2 and "--deliver hl7v2 needs --subject" in err and "PID-3" in err
    assert (gateway.seen if protocol == "http" else gateway.requests) == []
