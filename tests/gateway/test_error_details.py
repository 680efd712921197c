"""What an error answer tells the caller, over HTTP and gRPC alike: the gateway's own errors (4xx and 5xx)
carry their message; any other exception is "internal error", whatever attributes it has. The old check,
`status < 500 or hasattr(exc, "retry_after_s")`, let through the text of a foreign exception that has a
`retry_after_s`: Ray Serve's BackPressureError (a full FeatureExtractor queue) answered its queue sizes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from ray.serve.exceptions import BackPressureError
from support.gateway import API_KEY, av_request

from avpenet.errors import TooLarge
from preprocess_service import http_routes
from preprocess_service.errors import BudgetSpent, GatewayError, InvalidRequest, TritonTimeout
from preprocess_service.grpc_methods import GrpcMethods
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client, ScoreError

SERVICE = SimpleNamespace(record=lambda *args: None, refused=lambda *args: None)  # the counters, unread here
OWN = [
    (InvalidRequest("age_group must be one of adult, neonate, unknown"), 422, "INVALID_ARGUMENT", None),
    (TooLarge("upload exceeds the limit of 10 bytes"), 413, "RESOURCE_EXHAUSTED", None),
    (TritonTimeout("Triton did not answer within 12.0 s"), 504, "DEADLINE_EXCEEDED", None),
    (GatewayError("inference failed (INTERNAL)"), 500, "INTERNAL", None),
    (BudgetSpent("not scored: this request's 57 s time budget ran out", 2), 503, "UNAVAILABLE", "2"),
]
FOREIGN = [
    BackPressureError(num_queued_requests=64, max_queued_requests=64, retry_after_s=None),
    KeyError("/srv/models/fusion/1/model.onnx"),
]


class _Context:
    """The parts of a gRPC servicer context an error answer sets."""

    def set_code(self, code) -> None:
        self.code = code.name

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailing) -> None:
        self.trailing = dict(trailing)


def _http(exc: Exception) -> tuple[int, dict, dict]:
    response = http_routes.http_error(SERVICE, exc, "rid-1", "/v1/score")
    return response.status_code, json.loads(response.body), dict(response.headers)


def _grpc(exc: Exception) -> _Context:
    methods, context = GrpcMethods(), _Context()
    methods.service = SERVICE
    methods._grpc_error(exc, "rid-1", context, "Score")
    return context


@pytest.mark.parametrize(("exc", "status", "code", "retry"), OWN, ids=lambda v: type(v).__name__)
def test_the_gateways_own_errors_say_what_happened_over_both_protocols(exc, status, code, retry):
    http_status, body, headers = _http(exc)
    assert (http_status, body["error"], body["detail"]) == (status, type(exc).__name__, str(exc))
    assert headers.get("retry-after") == retry
    context = _grpc(exc)
    assert (context.code, context.details) == (code, str(exc))
    assert context.trailing.get("retry-after") == retry
    # the class, as HTTP's body names it: gRPC's code alone leaves BudgetSpent and TritonUnavailable alike
    assert context.trailing["avpenet-error"] == body["error"] and context.trailing["x-request-id"] == "rid-1"


@pytest.mark.parametrize("exc", FOREIGN, ids=lambda v: type(v).__name__)
def test_any_other_exception_is_an_internal_error_over_both_protocols(exc):
    assert hasattr(BackPressureError(1, 1), "retry_after_s")  # what the old check took for a gateway error
    http_status, body, _ = _http(exc)
    assert (http_status, body["error"], body["detail"]) == (500, "InternalError", "internal error")
    context = _grpc(exc)
    assert (context.code, context.details) == ("INTERNAL", "internal error")
    assert context.trailing["avpenet-error"] == "InternalError" and "retry-after" not in context.trailing


REFUSED = [  # (what the SDK is given, the request, built when used, the class both protocols name)
    ({"api_key": "wrong-key"}, av_request, "Unauthenticated"),
    ({}, lambda: av_request(recorded_at="2026-13-40"), "InvalidRequest"),
    ({}, lambda: av_request(model_versions={"fusion": "77"}), "NotFound"),
    ({}, lambda: ScoreRequest(audio=MediaPart(data=b"not audio" * 20)), "UnsupportedMedia"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("client", "request_", "error"), REFUSED, ids=["key", "time", "pin", "media"])
def test_the_sdk_names_the_same_error_class_over_http_and_grpc(gateway_stack, client, request_, error):
    """`ScoreError.error` held the class over HTTP (the body's `error`) and "" over gRPC, whose answer carried
    only its code and details: the real gateway now sends it as the trailer `avpenet-error`."""
    named = {}
    for protocol, target in (("http", gateway_stack.http_url), ("grpc", gateway_stack.grpc_target)):
        sdk = Client(target, grpc=protocol == "grpc", retries=0, **{"api_key": API_KEY, **client})
        try:
            with pytest.raises(ScoreError) as info:
                sdk.score(request_())
        finally:
            sdk.close()
        named[protocol] = info.value.error
    assert named == {"http": error, "grpc": error}
