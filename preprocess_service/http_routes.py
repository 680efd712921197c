"""What the gateway's HTTP routes do: read the body under its limit, score, and answer JSON, FHIR or an error.

The routes themselves are declared on the `Gateway` ingress class (deployments.py), because Ray Serve binds
FastAPI routes to the methods of that class; each method there is one line that calls a handler here.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect

from avpenet.errors import TooLarge
from preprocess_service import audit, hl7_outcome, idempotency
from preprocess_service.auth import bearer_token
from preprocess_service.clinical import negotiate
from preprocess_service.cpu_work import here_if, small
from preprocess_service.errors import ClientGone, SlowUpload, detail_of, reason_of, status_of
from preprocess_service.multipart import parse_score_form
from preprocess_service.openapi import MODELS_ROUTE, SCORE_ROUTE
from preprocess_service.protocol import ErrorResponse, new_request_id
from preprocess_service.service import ScoringService
from preprocess_service.settings import Limits


async def read_body(request: Request, limits: Limits) -> bytearray:
    """The request body, refused with 413 as soon as it passes the upload limit (before it is all in memory)
    and with 408 when it arrives slower than `min_upload_bytes_per_s` after `upload_grace_s` (slow-loris).
    It is the buffer it was read into, not a bytes copy of it: the media parts become views of it."""
    limit = limits.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"upload is {declared} bytes; the limit is {limit} bytes")
    body = bytearray()
    start = time.monotonic()
    chunks = request.stream().__aiter__()
    while True:
        # The next chunk must come before the average rate since the start drops below the minimum.
        deadline = start + limits.upload_grace_s + (len(body) + 1) / limits.min_upload_bytes_per_s
        try:  # asyncio.timeout, not wait_for: no Task per chunk (a 60-s clip's body is ~80 chunks)
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return body
        except ClientDisconnect:  # flaky ward Wi-Fi, not a server fault: 499, reason ClientGone
            raise ClientGone(f"the client disconnected after {len(body)} bytes of the upload") from None
        except TimeoutError:
            raise SlowUpload(
                f"upload too slow: {len(body)} bytes in {time.monotonic() - start:.0f} s; send at least "
                f"{limits.min_upload_bytes_per_s} bytes/s after the first {limits.upload_grace_s:.0f} s"
            ) from None
        body.extend(chunk)
        if len(body) > limit:
            raise TooLarge(f"upload exceeds the limit of {limit} bytes")


async def score(service: ScoringService, request: Request) -> Response:
    """Multipart upload → the score as JSON, FHIR R4 or HL7 v2 (by `Accept`); one audit line per request."""
    rid = new_request_id(request.headers.get("x-request-id"))
    record = audit.AuditRecord(SCORE_ROUTE, "http", rid)
    try:
        token = bearer_token(request.headers.get("authorization"))
        service.authenticate(token)  # a caller without a valid key hears 401 first, whatever else is wrong
        record.api_key_id = audit.key_id(token)
        budget = service.settings.budget(request.headers)  # the proxy's clock runs: the body counts too
        fmt = negotiate(request.headers.get("accept"), request.query_params.get("fhir"))
        key = idempotency.check_key(request.headers.get(idempotency.HEADER))
        # The whole body first, then admission: a slow sender holds no scoring slot (min rate in read_body).
        body = await read_body(request, service.settings.limits)
        with service.admit() as slot:
            content_type = request.headers.get("content-type")
            limits = service.settings.limits
            parsed = await here_if(small(len(body), limits), parse_score_form, body, content_type, rid)
            del body  # the media parts are read-only views of it: nothing else holds or changes it
            answer = await service.clinical.answer(
                lambda: service.score(
                    parsed, protocol="http", trace_headers=dict(request.headers), budget=budget
                ),
                parsed,
                fmt=fmt,
                key=key,
                record=record,
                budget=budget,
                slot=slot,
            )
    except Exception as exc:
        record.emit(status_of(exc)[0])
        return http_error(service, exc, rid, SCORE_ROUTE)
    except asyncio.CancelledError:  # Serve cancels a request whose caller left: still one audit line
        record.emit(ClientGone.http_status)
        service.record(SCORE_ROUTE, "http", ClientGone.http_status)
        raise
    record.emit(200)
    service.record(SCORE_ROUTE, "http", 200)
    headers: dict[str, str] = {}  # Ray Serve's proxy sets X-Request-ID (the caller's, or its own = rid)
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    if answer.delivery:
        headers["X-HL7-Delivery"] = hl7_outcome.header(answer.delivery)  # ASCII (%-encoded), whatever it said
    return Response(answer.rendered.body, media_type=answer.rendered.content_type, headers=headers)


async def list_models(service: ScoringService, request: Request) -> Response:
    rid = new_request_id(request.headers.get("x-request-id"))
    record = audit.AuditRecord(MODELS_ROUTE, "http", rid)
    try:
        token = bearer_token(request.headers.get("authorization"))
        service.authenticate(token)
        record.api_key_id = audit.key_id(token)
        models = await service.models()
    except Exception as exc:
        record.emit(status_of(exc)[0])
        return http_error(service, exc, rid, MODELS_ROUTE)
    record.emit(200)
    service.record(MODELS_ROUTE, "http", 200)
    return JSONResponse(models.model_dump(mode="json"))


async def readyz(service: ScoringService) -> Response:
    body = {"status": "ready", "model": service.settings.model_name}
    if await service.ready():
        return JSONResponse(body)
    retry = str(service.settings.limits.retry_after_s)
    body["status"] = "not ready"
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry})


def metrics(service: ScoringService) -> Response:
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def http_error(service: ScoringService, exc: Exception, rid: str, route: str) -> Response:
    """The error as JSON: the gateway's own errors say what happened, anything else only "internal error"."""
    status, _ = status_of(exc)
    service.record(route, "http", status)
    service.refused(exc, "http")
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry:
        headers["Retry-After"] = str(retry)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = ErrorResponse(error=reason_of(exc), detail=detail_of(exc), request_id=rid)  # no foreign names
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)
