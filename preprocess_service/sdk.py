"""A small Python client for the gateway, HTTP or gRPC, with typed results and safe retries.

    client = Client("http://127.0.0.1:8080", api_key="...")  # or Client("127.0.0.1:9090", grpc=True)
    result = client.score(ScoreRequest(clip=MediaPart(data=mp4)), fmt="fhir-bundle")
    result.score          # ScoreResponse (always over gRPC; over HTTP only for fmt="json")
    result.document       # the FHIR JSON / HL7 v2 text when asked for

Retries: 429, 503 and 504 (HTTP) or RESOURCE_EXHAUSTED, UNAVAILABLE and DEADLINE_EXCEEDED (gRPC), a
connection that fails (status UNREACHABLE), an answer that does not come within `timeout_s` (TIMEOUT) or is
cut off (INCOMPLETE) are retried with exponential backoff, honouring Retry-After (up to MAX_RETRY_AFTER_S).
Not retried: the gateway's own RESOURCE_EXHAUSTED without Retry-After (a clip over its limits: sending it
again cannot help), nor grpcio's for a message over a gRPC size limit (the SDK's 64 MiB, or the proxy's): it
has no x-request-id either, and the ScoreError says to send the clip over HTTP. Every call sends an
Idempotency-Key (a fresh one per call unless given), so a retry of a request the gateway already scored gets
the first answer back instead of a second Observation. Other failures raise ScoreError at once; an answer
that is not the gateway's (a proxy's page) is BAD_ANSWER, and a 307/308 that would take the upload to another
origin is REDIRECT_REFUSED (preprocess_service/sdk_form.py).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from preprocess_service.protocol import ModelsResponse, ScoreRequest, ScoreResponse

FORMATS = ("json", "fhir-observation", "fhir-bundle", "hl7v2")
ACCEPT = {
    "json": "application/json",
    "fhir-observation": "application/fhir+json",
    "fhir-bundle": "application/fhir+json",
    "hl7v2": "x-application/hl7-v2+er7",
}
RETRY_HTTP = {429, 503, 504}
RETRY_GRPC = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
CONNECT_TIMEOUT_S = 10.0  # a host that drops packets is unreachable after this, not after `timeout_s`
MAX_RETRY_AFTER_S = 60.0  # the gateway's own Retry-After never exceeds this; a proxy's 3600 does not stall us
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
# grpcio's refusal of a message over a channel's or a server's limit: "Sent ... (5006 vs. 1024)"
OVER_GRPC_LIMIT = re.compile(r"(Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")


class ScoreError(RuntimeError):
    """The gateway refused a request: the HTTP status or gRPC code, the error class and its reason."""

    def __init__(self, status: int | str, detail: str, error: str = "") -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.error = error


@dataclass(frozen=True)
class ScoreResult:
    score: ScoreResponse | None  # None over HTTP when a document format was asked for
    document: str | None  # FHIR JSON or HL7 v2 ER7 text, when asked for
    content_type: str
    replayed: bool  # the gateway answered from its Idempotency-Key cache
    attempts: int
    hl7_delivery: str = ""  # MLLP outcome when deliver_hl7 was asked for

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
        self.target, self.api_key, self.grpc = target, api_key, grpc
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self._channel = channel
        self._own_channel = channel is None  # a channel the caller passed in is the caller's to close

    # --- public ---------------------------------------------------------------------------------------------
    def score(
        self, request: ScoreRequest, *, fmt: str = "json", idempotency_key: str | None = None
    ) -> ScoreResult:
        """Score one request; retried safely under one Idempotency-Key. Raises ScoreError."""
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}")
        key = idempotency_key or uuid.uuid4().hex
        call = self._score_grpc if self.grpc else self._score_http
        return self._retrying(lambda attempt: call(request, fmt, key, attempt))

    def models(self) -> ModelsResponse:
        """The ensemble and every model version Triton serves."""
        return self._retrying(lambda _: self._models_grpc() if self.grpc else self._models_http())

    # --- retries --------------------------------------------------------------------------------------------
    def _retrying(self, fn):
        delay = self.backoff_s
        for attempt in range(1, self.retries + 2):
            try:
                return fn(attempt)
            except _Retryable as exc:
                if attempt > self.retries:
                    raise exc.error from None
                time.sleep(max(delay, exc.retry_after_s))
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
        raise _Retryable(error, 0.0) from None

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
        _raise_for_http(reply)
        ctype = reply.headers.get("content-type", "")
        return ScoreResult(
            score=_gateway_json(reply, ScoreResponse) if fmt == "json" else None,
            document=None if fmt == "json" else reply.text,
            content_type=ctype,
            replayed=reply.headers.get("idempotent-replayed") == "true",
            attempts=attempt,
            hl7_delivery=reply.headers.get("x-hl7-delivery", ""),
        )

    def _models_http(self) -> ModelsResponse:
        reply = self._http("GET", "/v1/models", headers=self._headers({}))
        _raise_for_http(reply)
        return _gateway_json(reply, ModelsResponse)

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
            name, details = exc.code().name, exc.details() or ""
            if too_big := _over_grpc_limit(details, message.ByteSize()):  # the same bytes never pass
                raise too_big from None
            unreachable = name == "UNAVAILABLE" and "failed to connect" in details  # nothing listens
            error = ScoreError("UNREACHABLE" if unreachable else name, details)  # as over HTTP
            trailing = dict(exc.trailing_metadata() or ())
            too_large = (  # the gateway's own refusal of a clip over its limits (no proxy queue full)
                name == "RESOURCE_EXHAUSTED" and "x-request-id" in trailing and "retry-after" not in trailing
            )
            if name in RETRY_GRPC and not too_large:  # a connection failure is retried as UNAVAILABLE
                raise _Retryable(error, _retry_after(trailing.get("retry-after"))) from None
            raise error from None
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


class _Retryable(Exception):
    def __init__(self, error: ScoreError, retry_after_s: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After value (a number; an HTTP date counts as none), at most MAX_RETRY_AFTER_S."""
    try:
        return min(max(float(value or 0), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


def _over_grpc_limit(details: str, request_bytes: int) -> ScoreError | None:
    """The final error for a message over a gRPC size limit, else None. It is the request when its size is
    the one sent (refused by this channel, "Sent", or by the gateway's proxy, "Received"), else the answer."""
    if not (match := OVER_GRPC_LIMIT.search(details)):
        return None
    way, size, limit = match.group(1), int(match.group(2)), int(match.group(3))
    if size != request_bytes:  # the answer, over this channel's receive limit
        detail = f"the answer is {size} bytes, over this client's gRPC receive limit of {limit} bytes"
    else:
        whose = "this client's" if way == "Sent" else "the gateway's"
        detail = (
            f"the clip is too large for gRPC: the request is {size} bytes, over {whose} gRPC message limit "
            f"of {limit} bytes; send it over HTTP, where the gateway's own upload limit applies"
        )
    return ScoreError("RESOURCE_EXHAUSTED", detail, "MessageTooLarge")


def _gateway_json(reply, model):
    """The gateway's JSON answer as `model`; BAD_ANSWER when it is something else (a proxy's HTML page)."""
    try:
        return model.model_validate(reply.json())
    except ValueError as exc:  # not JSON, or not this model (pydantic's ValidationError is a ValueError)
        shown = reply.text[:200].strip() or "an empty body"
        raise ScoreError("BAD_ANSWER", f"HTTP {reply.status_code} {type(exc).__name__}: {shown}") from None


def _raise_for_http(reply) -> None:
    if reply.status_code < 400:
        return
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail, error = body.get("detail", reply.text), body.get("error", "")
    else:  # not the gateway's (a proxy's page or a bare string): its text is the reason
        detail, error = reply.text[:500] or reply.reason, ""
    exc = ScoreError(reply.status_code, str(detail), error)
    if reply.status_code in RETRY_HTTP:
        raise _Retryable(exc, _retry_after(reply.headers.get("retry-after")))
    raise exc
