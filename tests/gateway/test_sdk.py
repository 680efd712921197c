"""The SDK's retries against a real HTTP server on loopback: retried under ONE Idempotency-Key and request id,
Retry-After honoured, client errors not retried, typed results."""

from __future__ import annotations

import json

import pytest
from clinical_samples import response
from support.fake_gateway import FakeGateway as Gateway

from preprocess_service.client import score_grpc, score_http
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client, ScoreError, TargetError
from preprocess_service.sdk_errors import MAX_RETRY_AFTER_S
from preprocess_service.sdk_errors import retry_after as _retry_after


@pytest.fixture
def request_():
    return ScoreRequest(audio=MediaPart(data=b"RIFF....", filename="a.wav"), age_group="adult")


def error(status: int, detail: str) -> tuple[int, str]:
    return status, json.dumps({"error": "X", "detail": detail, "request_id": "r"})


def test_retries_503_under_one_idempotency_key(request_):
    gateway = Gateway([error(503, "triton down"), (200, response().model_dump_json())])
    try:
        result = Client(gateway.url, api_key="k", retries=2, backoff_s=0.01).score(request_)
    finally:
        gateway.close()
    assert result.attempts == 2 and result.score.score == response().score and not result.replayed
    first, second = gateway.seen
    assert first["idempotency-key"] == second["idempotency-key"] and len(first["idempotency-key"]) == 32
    assert first["x-request-id"] == second["x-request-id"] == request_.request_id
    assert first["authorization"] == "Bearer k"


def test_client_errors_are_not_retried_and_retries_run_out(request_):
    gateway = Gateway([error(404, "model_versions: fusion version 9 is not served")])
    try:
        with pytest.raises(ScoreError) as info:
            Client(gateway.url, retries=3, backoff_s=0.01).score(request_)
        assert info.value.status == 404 and "fusion version 9" in info.value.detail and len(gateway.seen) == 1
    finally:
        gateway.close()
    gateway = Gateway([error(503, "busy")])
    try:
        with pytest.raises(ScoreError) as info:
            Client(gateway.url, retries=2, backoff_s=0.01).score(request_)
        assert info.value.status == 503 and len(gateway.seen) == 3
    finally:
        gateway.close()


def test_a_slow_or_cut_off_answer_is_retried_and_named(request_):
    """Both were UNREACHABLE or a traceback with exit 2: a cut-off body escaped as ChunkedEncodingError."""
    ok = (200, response().model_dump_json())
    gateway = Gateway([(200, '{"score": 1', {"cut": True}), (200, "", {"delay": 1.0}), ok])
    try:
        result = Client(gateway.url, retries=2, backoff_s=0.01, timeout_s=0.5).score(request_)
        assert result.attempts == 3 and len({seen["idempotency-key"] for seen in gateway.seen}) == 1
    finally:
        gateway.close()
    gateway = Gateway([(200, "", {"delay": 1.0})])
    try:
        with pytest.raises(ScoreError) as info:
            Client(gateway.url, retries=0, timeout_s=0.3).score(request_)
        assert info.value.status == "TIMEOUT" and "0.3 s" in info.value.detail  # slow, not unreachable
    finally:
        gateway.close()


@pytest.mark.parametrize(
    ("answer", "status", "shown"),
    [
        ((403, '["forbidden by the WAF"]'), 403, "forbidden by the WAF"),  # JSON, but not an object
        ((403, "forbidden", {"type": "text/plain"}), 403, "forbidden"),
        ((200, "<html>sign in</html>", {"type": "text/html"}), "BAD_ANSWER", "sign in"),  # a proxy's page
    ],
)
def test_an_answer_that_is_not_the_gateways_keeps_its_reason(request_, answer, status, shown):
    gateway = Gateway([answer])
    try:
        with pytest.raises(ScoreError) as info:
            Client(gateway.url, retries=0).score(request_)
        assert info.value.status == status and shown in info.value.detail
    finally:
        gateway.close()


def test_retry_after_reads_fractions_caps_long_waits_and_ignores_dates():
    assert _retry_after("1.5") == 1.5 and _retry_after("3600") == MAX_RETRY_AFTER_S
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and _retry_after(None) == 0.0


def _grpc_gateway(code, details: str, trailing: tuple, options: tuple = ()) -> tuple:
    """A gRPC Scoring service on loopback that refuses every Score call with `code` and `trailing`;
    `options`: the server's (e.g. its receive limit, as the gateway's proxy sets it)."""
    from concurrent import futures

    import grpc

    from avpenet.v1 import scoring_pb2 as pb

    seen: list[int] = []

    def score(_request, context):
        seen.append(1)
        context.set_trailing_metadata(trailing)
        context.abort(code, details)

    handler = grpc.unary_unary_rpc_method_handler(
        score,
        request_deserializer=pb.ScoreRequest.FromString,
        response_serializer=pb.ScoreResponse.SerializeToString,
    )
    server = grpc.server(futures.ThreadPoolExecutor(2), options=list(options))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("avpenet.v1.Scoring", {"Score": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}", seen


@pytest.mark.parametrize(
    ("trailing", "calls"),
    [
        ((("x-request-id", "r1"),), 1),  # the gateway's own refusal (a clip over the limit): final
        ((("x-request-id", "r1"), ("retry-after", "0")), 3),  # the gateway full: retried
        ((), 3),  # Ray's proxy with its queue full: retried
    ],
)
def test_grpc_resource_exhausted_is_retried_only_when_it_can_pass(request_, trailing, calls):
    import grpc

    server, target, seen = _grpc_gateway(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "clip is 95.0 s; the limit is 60 s", trailing
    )
    client = Client(target, grpc=True, retries=2, backoff_s=0.01)
    try:
        with pytest.raises(ScoreError) as info:
            client.score(request_)
        assert info.value.status == "RESOURCE_EXHAUSTED" and len(seen) == calls
    finally:
        client.close()
        server.stop(None)


@pytest.mark.parametrize(
    ("code", "trailing", "error"),
    [
        ("FAILED_PRECONDITION", (("avpenet-error", "DeliveryNotConfigured"),), "DeliveryNotConfigured"),
        ("INVALID_ARGUMENT", (("x-request-id", "r1"), ("avpenet-error", "InvalidRequest")), "InvalidRequest"),
        ("UNAVAILABLE", (("avpenet-error", "BudgetSpent"), ("retry-after", "0")), "BudgetSpent"),
        ("INVALID_ARGUMENT", (), ""),  # a proxy's refusal names no class
    ],
)
def test_a_grpc_refusal_names_its_error_class_as_over_http(request_, code, trailing, error):
    """`ScoreError.error` was "" over gRPC, which carried only the code and details: a caller had to test
    FAILED_PRECONDITION there and DeliveryNotConfigured over HTTP. It is the gateway's `avpenet-error`."""
    import grpc

    server, target, _ = _grpc_gateway(grpc.StatusCode[code], "refused", trailing)
    client = Client(target, grpc=True, retries=1, backoff_s=0.01)
    try:
        with pytest.raises(ScoreError) as info:
            client.score(request_)
        assert (info.value.status, info.value.error, info.value.detail) == (code, error, "refused")
    finally:
        client.close()
        server.stop(None)


@pytest.mark.parametrize(
    ("channel_limit", "server_limit", "whose"),
    [(4096, None, "this client's gRPC message limit of 4096 bytes"),  # "Sent message larger than max"
     (None, 4096, "the gateway's gRPC message limit of 4096 bytes")],  # the proxy's "Received ..."
)  # fmt: skip
def test_a_grpc_message_over_the_size_limit_is_sent_once_and_sent_over_http_instead(
    channel_limit, server_limit, whose
):
    """It was retried `retries` times (grpcio's RESOURCE_EXHAUSTED has no x-request-id, as a full queue's)."""
    import grpc

    options = (("grpc.max_receive_message_length", server_limit),) if server_limit else ()
    server, target, _ = _grpc_gateway(grpc.StatusCode.INTERNAL, "never reached", (), options)
    calls: list[str] = []

    class Count(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            calls.append(details.method)
            return continuation(details, request)

    limit = [("grpc.max_send_message_length", channel_limit)] if channel_limit else []
    channel = grpc.intercept_channel(grpc.insecure_channel(target, options=limit), Count())
    clip = ScoreRequest(audio=MediaPart(data=b"\0" * 8192, filename="a.wav"), age_group="adult")
    try:
        with pytest.raises(ScoreError) as info:
            Client(target, grpc=True, retries=2, backoff_s=0.01, channel=channel).score(clip)
    finally:
        channel.close()
        server.stop(None)
    assert len(calls) == 1 and info.value.status == "RESOURCE_EXHAUSTED"
    assert whose in info.value.detail and "send it over HTTP" in info.value.detail


def test_a_client_closes_its_own_channel_and_never_the_callers():
    class Channel:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    theirs = Channel()
    with Client("127.0.0.1:1", grpc=True, channel=theirs) as client:
        pass
    assert theirs.closed == 0 and client._channel is theirs  # still the caller's, still usable
    own = Client("127.0.0.1:1", grpc=True)
    own._channel = mine = Channel()  # as _stub() would have made it
    with own:
        pass
    assert mine.closed == 1 and own._channel is None


@pytest.mark.parametrize(
    ("target", "grpc", "says"),
    [
        ("http://127.0.0.1:notaport", False, "the port is not a number from 1 to 65535"),
        ("http://127.0.0.1:0", False, "the port is not a number from 1 to 65535"),
        ("http://", False, "no host"),
        ("https://:8080", False, "no host"),
        ("127.0.0.1:8080", False, "give http(s)://host:port (e.g. http://127.0.0.1:8080), or use grpc=True"),
        ("http://127.0.0.1:9090", True, "with grpc=True give host:port (e.g. 127.0.0.1:9090), not a URL"),
        ("127.0.0.1:notaport", True, "the port is not a number from 1 to 65535"),
        (":9090", True, "no host"),
    ],
)
def test_a_client_refuses_a_target_nothing_can_be_sent_to_when_made(target, grpc, says):
    """`Client("http://127.0.0.1:notaport")` was made, then each score sent nothing, was retried and raised
    `INCOMPLETE: the answer was cut off (InvalidURL)`; `avpenet score` checked --url, other callers not."""
    with pytest.raises(TargetError) as info:
        Client(target, grpc=grpc)
    assert info.value.status == "BAD_TARGET" and isinstance(info.value, ScoreError | ValueError)
    assert info.value.detail.startswith(f"target {target}: {says}")  # then an example, where none is said


def test_the_single_attempt_forms_raise_the_score_error_they_document(request_):
    """score_http / score_grpc document ScoreError, but a bad target raised a bare ValueError, which an
    integrator catching ScoreError did not catch."""
    with pytest.raises(ScoreError, match="BAD_TARGET: target 127.0.0.1:8080: give http"):
        score_http("127.0.0.1:8080", request_)
    with pytest.raises(ScoreError, match="BAD_TARGET: target http://127.0.0.1:9090: .*not a URL"):
        score_grpc("http://127.0.0.1:9090", request_)
    with pytest.raises(ValueError, match="no host"):  # still a ValueError, as it was
        score_http("http://", request_)


@pytest.mark.parametrize("target", ["gateway.example.org", "127.0.0.1", "127.0.0.1:", "[::1]"])
def test_a_grpc_target_without_its_port_is_refused_naming_the_form(target):
    """`Client("gateway.example.org", grpc=True)` was taken: grpcio sent it to port 443, where the SDK's
    plain-text channel reaches no gateway (a TLS ingress, or nothing), and every score failed UNAVAILABLE."""
    with pytest.raises(TargetError) as info:
        Client(target, grpc=True)
    assert info.value.detail == (
        f"target {target}: no port: give host:port (e.g. 127.0.0.1:9090); grpcio would try 443, a TLS "
        "ingress's port"
    )
    Client(f"http://{target}").close()  # a URL's scheme names its port
    with Client(target, grpc=True, channel=object()) as client:  # the caller's channel (TLS to 443): a label
        assert client.target == target


@pytest.mark.parametrize(
    ("target", "grpc"),
    [
        ("https://gateway.example.org/avpenet", False),  # behind an ingress path, its default port
        ("http://[::1]:8080", False),
        ("gateway.example.org:9000", True),
        ("[::1]:9090", True),
        ("dns:///gateway.example.org:443", True),  # grpcio's name-resolver targets, grpcio reads them
        ("unix:/run/avpenet/grpc.sock", True),
        ("ipv4:127.0.0.1:9090", True),
    ],
)
def test_a_client_takes_every_target_form_it_can_send_to(target, grpc):
    Client(target, grpc=grpc).close()
