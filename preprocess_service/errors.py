"""Gateway-side failures, each tied to an HTTP status and a gRPC code like `avpenet.errors.InputError`.

Input problems come from `avpenet.errors` (raised by the shared feature code); these cover the rest: the
request's shape, auth, overload and Triton. Every class carries `http_status` and `grpc_code` so HTTP and gRPC
answer the same failure the same way (`status_of`), and both name its class (`reason_of`): HTTP in the body's
`error`, gRPC in the trailing metadata `avpenet-error` (`grpc_trailing`), which the SDK reads into
`ScoreError.error` alike.
"""

from __future__ import annotations

import math

from avpenet.errors import InputError


class InvalidRequest(InputError):
    """Parts missing or combined wrongly, unknown age_group, bad field values (422)."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"


class NotFound(InputError):
    """A pinned model version that Triton does not serve (404 / NOT_FOUND); the detail names it."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class NotAcceptable(InputError):
    """An `Accept` type the gateway cannot answer in (406); gRPC picks its format by field instead."""

    http_status = 406
    grpc_code = "INVALID_ARGUMENT"


class DeliveryNotConfigured(InputError):
    """HL7 delivery asked for but no interface engine is configured (422 / FAILED_PRECONDITION)."""

    http_status = 422
    grpc_code = "FAILED_PRECONDITION"


class ClientGone(InputError):
    """The caller went away before its request was answered (499, nginx's code; gRPC CANCELLED): counted and
    audited as the caller's doing, not as a server fault."""

    http_status = 499
    grpc_code = "CANCELLED"


class SlowUpload(InputError):
    """The request body arrived slower than the minimum upload rate (408): a slow-loris or a dead link."""

    http_status = 408
    grpc_code = "DEADLINE_EXCEEDED"


class DuplicateHeader(InputError):
    """A header the gateway and Ray Serve's proxy must read alike, sent more than once (400): the proxy keeps
    the last value, Starlette the first, so the gateway refuses rather than guess which one was meant."""

    http_status = 400


class TimeoutTooShort(InputError):
    """An `x-request-timeout-seconds` below the gateway's minimum (budget.MIN_TIMEOUT_S), refused before any
    work (400): no budget could be left for scoring, so a retry would fail alike (no Retry-After)."""

    http_status = 400


class GatewayError(Exception):
    """A request that failed for a reason other than its content."""

    http_status = 500
    grpc_code = "INTERNAL"
    retry_after_s: int | None = None


class Unauthenticated(GatewayError):
    """Missing or wrong API key (401)."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class Overloaded(GatewayError):
    """The replica's in-flight limit or Triton's queue is full: retry after a moment (429)."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TritonUnavailable(GatewayError):
    """Triton is down, not ready or unreachable after the retries (503 + Retry-After)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FeaturesUnavailable(GatewayError):
    """The FeatureExtractor deployment did not answer in time or its replica died (503 + Retry-After):
    Serve is restarting it or it is saturated; the upload itself was fine and can be sent again."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TritonTimeout(GatewayError):
    """Triton did not answer within the deadline (504)."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class BudgetSpent(GatewayError):
    """The request's time budget (budget.py) ran out before it was scored (503 + Retry-After): the service
    is busy and the clip was fine; the reason names the stage, the budget and the proxy's limit."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StillRunning(BudgetSpent):
    """A retry under an Idempotency-Key whose first request was still running when the retry's own time
    budget ran out (503 + Retry-After); sent again with the same key, it waits for the first one again or
    gets its answer (or runs again if that one failed)."""


ERROR_KEY = "avpenet-error"  # gRPC trailing metadata: the error class, HTTP's body `error`
PROCESSED_ATTR = "media_seconds_processed"  # set on an extractor's error: the media it decoded before it


def report_processed(exc: BaseException, seconds: float) -> BaseException:
    """`exc`, marked with the media seconds the extractor decoded and tracked before it failed: video
    admission credits them, so a clip refused after its decode does not read as a slow extractor. An
    attribute, not a wrapper: the error keeps its class (its status) across Ray's pickling."""
    setattr(exc, PROCESSED_ATTR, float(seconds))
    return exc


def processed_seconds(exc: BaseException) -> float | None:
    """The media seconds `report_processed` put on `exc` (at least 0), or None when it says nothing."""
    value = getattr(exc, PROCESSED_ATTR, None)
    if not isinstance(value, float) or not math.isfinite(value) or value < 0.0:
        return None
    return value


def reason_of(exc: BaseException) -> str:
    """A bounded label for metrics: the error class of this hierarchy, else "InternalError"."""
    return type(exc).__name__ if isinstance(exc, InputError | GatewayError) else "InternalError"


def detail_of(exc: BaseException) -> str:
    """What an error answer tells the caller: the message of this hierarchy's errors, which the gateway
    writes for the caller (what was wrong, what to do), whatever their status; "internal error" for any
    other exception, whose text may carry internals (Ray's backpressure error names its queue sizes)."""
    return str(exc) if isinstance(exc, InputError | GatewayError) else "internal error"


def status_of(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, gRPC code name) for any exception; unknown ones are internal errors."""
    if isinstance(exc, InputError | GatewayError):
        return int(exc.http_status), str(exc.grpc_code)
    return 500, "INTERNAL"


def grpc_trailing(exc: BaseException, rid: str) -> list[tuple[str, str]]:
    """The trailing metadata of a gRPC error answer: the request id, the error class under ERROR_KEY (what
    HTTP's body names `error`) and, for an error that may pass later, its `retry-after` seconds."""
    trailing = [("x-request-id", rid), (ERROR_KEY, reason_of(exc))]
    if retry := getattr(exc, "retry_after_s", None):
        trailing.append(("retry-after", str(retry)))
    return trailing
