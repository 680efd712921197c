"""HL7 delivery without a patient is refused before scoring, over both protocols.

`deliver=hl7v2` (gRPC `deliver_hl7`) without `subject_ref` was accepted and the ORU^R01 sent to the
interface engine carried `PID|||UNKNOWN^^^AVPENET^U`: every unidentified score filed under one made-up
patient. Now it is 422 / INVALID_ARGUMENT, like any other field refusal, with a reason an integrator can act
on, and the clip is never scored. The SDK refuses it before sending (test_sdk_redelivery.py), and so does
`avpenet score --deliver hl7v2` without `--subject` (tests/cli/test_cli_score_delivery.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from support.asgi import score_request

from avpenet.v1 import scoring_pb2
from preprocess_service import http_routes
from preprocess_service.grpc_methods import GrpcMethods
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

SETTINGS = {"triton_url": "127.0.0.1:1", "grpc_enabled": False, "hl7_mllp_target": "127.0.0.1:9"}


def service() -> tuple[ScoringService, list]:
    """A gateway with an interface engine configured; `scored` lists the requests that reached scoring."""
    svc, scored = ScoringService(GatewaySettings.load(SETTINGS, {})), []

    async def scoring(request, **kwargs):
        scored.append(request.request_id)
        raise AssertionError("a refused request was scored")

    svc.score = scoring
    return svc, scored


class Context:
    def invocation_metadata(self):
        return []

    def set_code(self, code) -> None:
        self.code = code.name

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailing) -> None:
        pass


def http_answer(fields: dict[str, str]) -> tuple[int, dict, list]:
    parts = [b'--XX\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\nRIFFxxxx\r\n']
    parts += [
        f'--XX\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    request = score_request(
        [{"type": "http.request", "body": b"".join([*parts, b"--XX--\r\n"]), "more_body": False}]
    )

    async def run():
        svc, scored = service()
        try:
            return await http_routes.score(svc, request), scored
        finally:
            await svc.close()

    response, scored = asyncio.run(run())
    return response.status_code, json.loads(response.body), scored


@pytest.mark.parametrize("subject", [None, ""])
def test_http_delivery_without_a_subject_is_422_before_scoring(subject):
    fields = {
        "age_group": "adult",
        "deliver": "hl7v2",
        **({"subject_ref": subject} if subject is not None else {}),
    }
    status, body, scored = http_answer(fields)
    assert status == 422 and body["error"] == "InvalidRequest" and scored == []
    assert body["detail"].startswith("deliver=hl7v2 (gRPC deliver_hl7) needs subject_ref: the patient's")
    assert "PID-3" in body["detail"] and "Patient/123" in body["detail"]


def test_grpc_delivery_without_a_subject_is_invalid_argument_before_scoring():
    message = scoring_pb2.ScoreRequest(
        age_group="adult", audio=scoring_pb2.MediaFile(data=b"RIFFxxxx"), deliver_hl7=True
    )

    async def run():
        methods, context = GrpcMethods(), Context()
        methods.service, scored = service()
        try:
            await methods.Score(message.SerializeToString(), context)
        finally:
            await methods.service.close()
        return context, scored

    context, scored = asyncio.run(run())
    assert context.code == "INVALID_ARGUMENT" and scored == []
    assert "needs subject_ref" in context.details and "PID-3" in context.details


def test_with_no_engine_configured_delivery_is_refused_first_naming_subject_ref_too():
    """The documented order (INTEGRATION.md): DeliveryNotConfigured before the missing subject_ref, and its
    reason says subject_ref is needed too, so an integrator fixes both in one round."""
    from preprocess_service.errors import DeliveryNotConfigured
    from preprocess_service.protocol import MediaPart, ScoreRequest

    no_engine = ScoringService(GatewaySettings.load({**SETTINGS, "hl7_mllp_target": ""}, {}))
    request = ScoreRequest(audio=MediaPart(data=b"RIFFxxxx"), age_group="adult", deliver_hl7=True)
    try:
        with pytest.raises(DeliveryNotConfigured, match="no hl7_mllp_target configured") as info:
            no_engine.clinical.check(request)
    finally:
        asyncio.run(no_engine.close())
    assert "also needs subject_ref" in str(info.value)
