"""A small Python client for the gateway, HTTP or gRPC, with typed results and safe retries.

    client = Client("http://127.0.0.1:8080", api_key="...")  # or Client("127.0.0.1:9090", grpc=True)
    result = client.score(ScoreRequest(clip=MediaPart(data=mp4)), fmt="fhir-bundle")
    result.score          # ScoreResponse (always over gRPC; over HTTP only for fmt="json")
    result.document       # the FHIR JSON / HL7 v2 text when asked for

Retries: 429, 503 and 504 (HTTP) or RESOURCE_EXHAUSTED, UNAVAILABLE and DEADLINE_EXCEEDED (gRPC), a
connection that fails (status UNREACHABLE), an answer that does not come within `timeout_s` (TIMEOUT; over
gRPC a DEADLINE_EXCEEDED the gateway did not send) or is cut off (INCOMPLETE) are retried with exponential
backoff, honouring Retry-After (at most 60 s).
Not retried: the gateway's own RESOURCE_EXHAUSTED without Retry-After (a clip over its limits: sending it
again cannot help), nor grpcio's for a message over a gRPC size limit (the SDK's 64 MiB, or the proxy's): it
has no x-request-id either, and the ScoreError says to send the clip over HTTP. Every call sends an
Idempotency-Key (a fresh one per call unless given), so a retry of a request the gateway already scored gets
the first answer back instead of a second Observation. Other failures raise ScoreError at once; an answer
that is not the gateway's (a proxy's page) is BAD_ANSWER (sdk_errors.py), and a 307/308 that would take the
upload to another origin is REDIRECT_REFUSED (sdk_form.py). A target nothing can be sent to (no host, a port
not 1-65535, a URL with grpc=True, none over HTTP, a gRPC host without its port, an IPv6 address without its
brackets) is a TargetError when the Client is made (sdk_target.py): a ScoreError with status BAD_TARGET, and
a ValueError. A request the gateway would refuse as InvalidRequest that the SDK can tell before sending it
(deliver_hl7 without subject_ref, an unknown fmt, a request_id the gateway refuses) is a RequestError: status
BAD_REQUEST, also a ValueError.

HL7 delivery (`ScoreRequest(deliver_hl7=True)`): an answer whose delivery failed for a reason that may pass
(hl7_outcome.may_pass, the gateway's own rule: engine down, timeout, AE/CE) is sent again under the same key
and request id, within the same `retries` and backoff: the gateway sends the same message again without
scoring the clip again, until it is delivered or rejected. When the retries run out, or a resend fails, the
last answer comes back with its outcome: the clip was scored. `result.hl7_deliveries` holds every round's.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from preprocess_service.hl7_outcome import NO_SUBJECT, from_header, may_pass
from preprocess_service.protocol import (
    REQUEST_ID_RE,
    REQUEST_ID_RULE,
    ModelsResponse,
    ScoreRequest,
    ScoreResponse,
)
from preprocess_service.sdk_errors import (  # the retry constants stay importable from here, as before
    MAX_RETRY_AFTER_S,  # noqa: F401
    OVER_GRPC_LIMIT,  # noqa: F401
    RETRY_GRPC,  # noqa: F401
    RETRY_HTTP,  # noqa: F401
    RequestError,
    Retryable,
    ScoreError,
    TargetError,
    gateway_json,
    grpc_error,
    over_grpc_limit,
    raise_for_http,
)
from preprocess_service.sdk_target import target_problem

__all__ = ["FORMATS", "Client", "RequestError", "ScoreError", "ScoreResult", "TargetError"]
T = TypeVar("T")

FORMATS = ("json", "fhir-observation", "fhir-bundle", "hl7v2")
ACCEPT = {
    "json": "application/json",
    "fhir-observation": "application/fhir+json",
    "fhir-bundle": "application/fhir+json",
    "hl7v2": "x-application/hl7-v2+er7",
}
CONNECT_TIMEOUT_S = 10.0  # a host that drops packets is unreachable after this, not after `timeout_s`
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


@dataclass(frozen=True)
class ScoreResult:
    score: ScoreResponse | None  # None over HTTP when a document format was asked for
    document: str | None  # FHIR JSON or HL7 v2 ER7 text, when asked for
    content_type: str
    replayed: bool  # the gateway answered from its Idempotency-Key cache
    attempts: int  # sends of the request, all told: retries and delivery rounds included
    hl7_delivery: str = ""  # the last MLLP outcome when deliver_hl7 was asked for
    hl7_deliveries: tuple[str, ...] = ()  # every delivery round's outcome, first to last

    @property
    def delivery_rounds(self) -> int:
        """How many answers carried a delivery outcome: 1 when the first delivery settled it."""
        return len(self.hl7_deliveries)

    def fhir(self) -> dict[str, Any]:
        """The FHIR resource as a dict (fmt fhir-observation / fhir-bundle)."""
        import json

        if self.document is None or "fhir" not in self.content_type:
            raise ValueError("this result carries no FHIR document")
        return json.loads(self.document)


class Client:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        grpc: bool = False,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 120.0,
        channel: Any = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        # Not sent, retried and named INCOMPLETE. A gRPC channel the caller made (TLS to an ingress on 443)
        # goes where it was made for: its target is a label then, and needs no port.
        if not (grpc and channel is not None) and (problem := target_problem(target, grpc)):
            raise TargetError(target, problem)
        self.target, self.api_key, self.grpc = target, api_key, grpc
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self._channel = channel
        self._own_channel = channel is None  # a channel the caller passed in is the caller's to close

    # --- public ---------------------------------------------------------------------------------------------
    def score(
        self, request: ScoreRequest, *, fmt: str = "json", idempotency_key: str | None = None
    ) -> ScoreResult:
        """Score one request; retried safely under one Idempotency-Key, and sent again while its HL7 delivery
        failed for a reason that may pass (not scored again). Raises ScoreError: RequestError (BAD_REQUEST,
        also a ValueError) before anything is sent, for a `fmt` it does not know or a delivery without
        `subject_ref` (the patient of PID-3)."""
        if fmt not in FORMATS:
            raise RequestError(f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if request.deliver_hl7 and not request.subject_ref:  # the gateway refuses it (422 / INVALID_ARGUMENT)
            raise RequestError(NO_SUBJECT)
        if request.request_id and not REQUEST_ID_RE.fullmatch(request.request_id):  # gRPC refuses it; HTTP
            raise RequestError(REQUEST_ID_RULE)  # would answer each retry under a new id: a second record
        key = idempotency_key or uuid.uuid4().hex
        call = self._score_grpc if self.grpc else self._score_http
        rounds: list[str] = []
        sends = [0]

        def send(attempt: int) -> ScoreResult:
            sends[0] = attempt
            result = call(request, fmt, key, attempt)
            rounds.extend([result.hl7_delivery] if result.hl7_delivery else [])
            return dataclasses.replace(result, hl7_deliveries=tuple(rounds))

        undelivered = (lambda result: may_pass(result.hl7_delivery)) if request.deliver_hl7 else None
        result = self._retrying(send, undelivered)
        # an earlier answer returned after later sends failed (a 503 after a failed delivery) counts them too
        return dataclasses.replace(result, attempts=sends[0]) if result.attempts != sends[0] else result

    def models(self) -> ModelsResponse:
        """The ensemble and every model version Triton serves."""
        return self._retrying(lambda _: self._models_grpc() if self.grpc else self._models_http())

    # --- retries --------------------------------------------------------------------------------------------
    def _retrying(self, fn: Callable[[int], T], again: Callable[[T], bool] | None = None) -> T:
        """fn(attempt) at most `retries` + 1 times, with backoff, until it answers and `again` (if given)
        does not ask for another send. Once there is an answer, a send that fails or the retries running out
        return the last answer rather than raise: the request was answered (e.g. scored, not delivered)."""
        delay, answer = self.backoff_s, None
        for attempt in range(1, self.retries + 2):
            try:
                answer = fn(attempt)
            except Retryable as exc:
                if attempt > self.retries:
                    return _last(answer, exc.error)
                wait_s = max(delay, exc.retry_after_s)
            except ScoreError as exc:
                return _last(answer, exc)
            else:
                if again is None or not again(answer) or attempt > self.retries:
                    return answer
                wait_s = delay
            time.sleep(wait_s)
            delay *= 2
        raise AssertionError("unreachable")

    # --- HTTP -----------------------------------------------------------------------------------------------
    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = dict(extra)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _http(self, method: str, path: str, **kwargs):
        import requests

        timeout = (min(CONNECT_TIMEOUT_S, self.timeout_s), self.timeout_s)
        try:
            return requests.request(method, f"{self.target.rstrip('/')}{path}", timeout=timeout, **kwargs)
        except requests.ReadTimeout:  # reachable, but slow: safe to retry under the Idempotency-Key
            error = ScoreError("TIMEOUT", f"no answer within {self.timeout_s:g} s")
        except (requests.ConnectionError, requests.Timeout) as exc:
            error = ScoreError("UNREACHABLE", type(exc).__name__)
        except requests.RequestException as exc:  # e.g. the answer cut off mid-body
            error = ScoreError("INCOMPLETE", f"the answer was cut off ({type(exc).__name__})")
        raise Retryable(error, 0.0) from None

    def _score_http(self, request: ScoreRequest, fmt: str, key: str, attempt: int) -> ScoreResult:
        from preprocess_service.sdk_form import multipart_form, resend_on_redirect  # requests: when used

        body = multipart_form(request)
        headers = self._headers(
            {"X-Request-ID": request.request_id, "Accept": ACCEPT[fmt], "Idempotency-Key": key}
            | {"Content-Type": body.content_type}
        )
        params = {"fhir": "bundle"} if fmt == "fhir-bundle" else None
        hooks = {"response": resend_on_redirect(request, body)}
        reply = self._http("POST", "/v1/score", data=body, headers=headers, params=params, hooks=hooks)
        raise_for_http(reply)
        ctype = reply.headers.get("content-type", "")
        return ScoreResult(
            score=gateway_json(reply, ScoreResponse) if fmt == "json" else None,
            document=None if fmt == "json" else reply.text,
            content_type=ctype,
            replayed=reply.headers.get("idempotent-replayed") == "true",
            attempts=attempt,
            hl7_delivery=from_header(reply.headers.get("x-hl7-delivery", "")),  # as gRPC's, not %-encoded
        )

    def _models_http(self) -> ModelsResponse:
        reply = self._http("GET", "/v1/models", headers=self._headers({}))
        raise_for_http(reply)
        return gateway_json(reply, ModelsResponse)

    # --- gRPC -----------------------------------------------------------------------------------------------
    def _stub(self):
        import grpc

        from avpenet.v1 import scoring_pb2_grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.target, options=GRPC_OPTIONS)
        return scoring_pb2_grpc.ScoringStub(self._channel)

    def _metadata(self, extra: dict[str, str]) -> list[tuple[str, str]]:
        md = [(k.lower(), v) for k, v in extra.items()]
        if self.api_key:
            md.append(("authorization", f"Bearer {self.api_key}"))
        return md

    def _grpc(self, method: str, message, extra: dict[str, str]):
        import grpc

        try:
            reply, call = getattr(self._stub(), method).with_call(
                message, metadata=self._metadata(extra), timeout=self.timeout_s
            )
        except grpc.RpcError as exc:
            details = exc.details() or ""
            if too_big := over_grpc_limit(details, message.ByteSize()):  # the same bytes never pass
                raise too_big from None
            raise grpc_error(exc.code().name, details, dict(exc.trailing_metadata() or ())) from None
        return reply, dict(call.trailing_metadata() or ())

    def _score_grpc(self, request: ScoreRequest, fmt: str, key: str, attempt: int) -> ScoreResult:
        from avpenet.v1 import scoring_pb2 as pb

        message = request.to_proto()
        message.format = {"json": 0, "fhir-observation": pb.FHIR_OBSERVATION, "fhir-bundle": pb.FHIR_BUNDLE,
                          "hl7v2": pb.HL7V2}[fmt]  # fmt: skip
        reply, trailing = self._grpc("Score", message, {"idempotency-key": key})
        return ScoreResult(
            score=ScoreResponse.from_proto(reply),
            document=reply.document or None,
            content_type=reply.document_type or ACCEPT["json"],
            replayed=trailing.get("idempotent-replayed") == "true",
            attempts=attempt,
            hl7_delivery=reply.hl7_delivery,
        )

    def _models_grpc(self) -> ModelsResponse:
        from google.protobuf.json_format import MessageToDict

        from avpenet.v1 import scoring_pb2 as pb

        reply, _ = self._grpc("ListModels", pb.ListModelsRequest(), {})
        return ModelsResponse.model_validate(MessageToDict(reply, preserving_proto_field_name=True))

    def close(self) -> None:
        if self._channel is not None and self._own_channel and hasattr(self._channel, "close"):
            self._channel.close()
        self._channel = None if self._own_channel else self._channel

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _last(answer: T | None, error: ScoreError) -> T:
    """The answer already in hand (a send after it failed), else `error` raised."""
    if answer is None:
        raise error from None
    return answer
