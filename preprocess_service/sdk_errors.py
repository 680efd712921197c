"""What the SDK (sdk.py) makes of a gateway's refusal: a ScoreError with the status, the error class and the
reason, marked retryable (`Retryable`, with the Retry-After to honour) where sending the same request again
may pass: 429/503/504 over HTTP, RESOURCE_EXHAUSTED/UNAVAILABLE/DEADLINE_EXCEEDED over gRPC, but not the
gateway's own RESOURCE_EXHAUSTED without Retry-After (a clip over its limits) nor grpcio's for a message over
a gRPC size limit. An answer that is not the gateway's (a proxy's page) keeps its own text as the reason.
A target nothing can be sent to is a TargetError (BAD_TARGET) before anything is sent, and a request the
gateway would refuse as InvalidRequest that the SDK can tell (HL7 delivery without subject_ref, an unknown
fmt) a RequestError (BAD_REQUEST); both are ValueErrors too, as they were before they were ScoreErrors.
The error class is the same over both protocols: HTTP's body `error`, gRPC's trailing `avpenet-error`.
Every one of them survives pickle (a ProcessPoolExecutor, multiprocessing or Celery worker sends its
exception back pickled) with its status, detail, error and text: `_rebuilt` restores it without calling a
constructor whose signature is not its `args`.
"""

from __future__ import annotations

import re

from preprocess_service.errors import ERROR_KEY

RETRY_HTTP = {429, 503, 504}
RETRY_GRPC = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
# grpcio's details when no connection could be made: nothing listens, or the name does not resolve
NOT_REACHED = ("failed to connect", "errors resolving", "DNS resolution failed")
MAX_RETRY_AFTER_S = 60.0  # the gateway's own Retry-After never exceeds this; a proxy's 3600 does not stall us
# grpcio's refusal of a message over a channel's or a server's limit: "Sent ... (5006 vs. 1024)"
OVER_GRPC_LIMIT = re.compile(r"(Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")


class ScoreError(RuntimeError):
    """The gateway refused a request: the HTTP status or gRPC code, the error class and its reason."""

    def __init__(self, status: int | str, detail: str, error: str = "") -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.error = error

    def __reduce__(self):
        return _rebuilt, (type(self), self.args, self.__dict__)


class TargetError(ScoreError, ValueError):
    """A target nothing can be sent to (sdk_target.py), refused when the Client is made (status BAD_TARGET):
    a ScoreError, which score_http/score_grpc document, and a ValueError, which it was before."""

    def __init__(self, target: str, problem: str) -> None:
        super().__init__("BAD_TARGET", f"target {target}: {problem}")
        self.target, self.problem = target, problem


class RequestError(ScoreError, ValueError):
    """A request refused before it is sent (status BAD_REQUEST, error InvalidRequest: the class the gateway
    would answer it with, 422 / INVALID_ARGUMENT), e.g. HL7 delivery without subject_ref: a ScoreError, which
    Client.score and score_http/score_grpc document, and a ValueError, which it was before."""

    def __init__(self, detail: str) -> None:
        super().__init__("BAD_REQUEST", detail, "InvalidRequest")


class Retryable(Exception):
    """`error`, which the same request sent again after `retry_after_s` (at least the backoff) may pass."""

    def __init__(self, error: ScoreError, retry_after_s: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[BaseException], args: tuple, state: dict) -> BaseException:
    """An exception unpickled: its args and attributes as they were, its __init__ not called again (pickle's
    default calls cls(*args), and these take other arguments than the text their args hold)."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def retry_after(value: str | None) -> float:
    """Seconds from a Retry-After value (a number; an HTTP date counts as none), at most MAX_RETRY_AFTER_S."""
    try:
        return min(max(float(value or 0), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


def over_grpc_limit(details: str, request_bytes: int) -> ScoreError | None:
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


def grpc_error(name: str, details: str, trailing: dict[str, str]) -> ScoreError | Retryable:
    """A gRPC refusal (status code `name`) as the SDK raises it: Retryable where it may pass."""
    status = name
    if name == "UNAVAILABLE" and any(m in details for m in NOT_REACHED):  # nothing listens, or no such host
        status = "UNREACHABLE"
    elif name == "DEADLINE_EXCEEDED" and ERROR_KEY not in trailing:  # this client's deadline or a proxy's,
        status = "TIMEOUT"  # not the gateway's own refusal (which names its class): as HTTP's read timeout
    # the class the gateway names, as HTTP's body does; none from a proxy or a gateway before it sent one
    error = ScoreError(status, details, trailing.get(ERROR_KEY, ""))
    too_large = (  # the gateway's own refusal of a clip over its limits (no proxy queue full)
        name == "RESOURCE_EXHAUSTED" and "x-request-id" in trailing and "retry-after" not in trailing
    )
    if name in RETRY_GRPC and not too_large:  # a connection failure is retried as UNAVAILABLE
        return Retryable(error, retry_after(trailing.get("retry-after")))
    return error


def gateway_json(reply, model):
    """The gateway's JSON answer as `model`; BAD_ANSWER when it is something else (a proxy's HTML page)."""
    try:
        return model.model_validate(reply.json())
    except ValueError as exc:  # not JSON, or not this model (pydantic's ValidationError is a ValueError)
        shown = reply.text[:200].strip() or "an empty body"
        raise ScoreError("BAD_ANSWER", f"HTTP {reply.status_code} {type(exc).__name__}: {shown}") from None


def raise_for_http(reply) -> None:
    """Nothing for an answer under 400; else its ScoreError, Retryable for 429/503/504."""
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
        raise Retryable(exc, retry_after(reply.headers.get("retry-after")))
    raise exc
