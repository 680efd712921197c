"""The gateway's gRPC methods: `avpenet.v1.Scoring/Score`, `/ListModels` and `grpc.health.v1.Health/Check`.

Ray Serve's gRPC proxy calls the ingress deployment's method named like the rpc, so these are methods of a
mixin that `Gateway` inherits; they need only `self.service` (a `ScoringService`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

import grpc

from preprocess_service import audit, grpc_wire, idempotency
from preprocess_service.auth import bearer_token
from preprocess_service.clinical import proto_format
from preprocess_service.errors import ClientGone, InvalidRequest, detail_of, grpc_trailing, status_of
from preprocess_service.protocol import MEDIA_PARTS, ScoreRequest, new_request_id

if TYPE_CHECKING:
    from preprocess_service.service import ScoringService

HEALTH_SERVICES = ("", "avpenet.v1.Scoring")


def _metadata(grpc_context) -> dict[str, str]:
    return {str(k).lower(): v for k, v in (grpc_context.invocation_metadata() or []) if isinstance(v, str)}


def _request_id(*candidates: str | None) -> str:
    """The caller's first id given (new_request_id checks it), else the id Ray Serve's gRPC proxy gave this
    call, which it sends back as the `request_id` trailer: with no id sent, `request_id` and the gateway's
    `x-request-id` are then one id, not two unrelated UUIDs (new_request_id makes one outside Serve)."""
    given = next((c for c in candidates if c), None)
    return new_request_id(given if given is not None else _serve_request_id())


def _serve_request_id() -> str | None:
    """Ray Serve's id for this request, read through a private Ray surface (pinned Ray 2.60): None if it
    moved, so a Ray upgrade costs the two trailers' agreement, never the call."""
    try:
        from ray.serve import context  # Serve's own request context: its proxy's id for this request

        return context._get_serve_request_context().request_id or None
    except Exception:  # noqa: BLE001 (any change of a private API: fall back to a fresh id)
        return None


def _grpc_token(metadata: Mapping[str, str]) -> str | None:
    """`authorization: Bearer <key>` metadata (a bare key too: some tools add no scheme)."""
    value = metadata.get("authorization")
    if value is None:
        return None
    return bearer_token(value) or (value.strip() or None)


class GrpcMethods:
    """Method names are the rpc names, hence the N802 exceptions."""

    service: ScoringService

    async def Score(self, request, grpc_context):  # noqa: N802
        from avpenet.v1 import scoring_pb2

        budget = self.service.settings.budget()  # the gRPC proxy's request_timeout_s (no per-call header)
        metadata = _metadata(grpc_context)
        try:  # the proxy passes the message unparsed (grpc_wire): malformed bytes are INVALID_ARGUMENT
            request, views = grpc_wire.parse_views(scoring_pb2.ScoreRequest, request, MEDIA_PARTS)
        except InvalidRequest as exc:
            rid = _request_id(metadata.get("x-request-id"), metadata.get("request_id"))
            audit.AuditRecord("Score", "grpc", rid).emit(status_of(exc)[1])
            self._grpc_error(exc, rid, grpc_context, "Score")
            return scoring_pb2.ScoreResponse()
        rid = _request_id(request.request_id, metadata.get("x-request-id"), metadata.get("request_id"))
        record = audit.AuditRecord("Score", "grpc", rid)
        try:
            token = _grpc_token(metadata)
            self.service.authenticate(token)
            record.api_key_id = audit.key_id(token)
            fmt = proto_format(request.format)
            key = idempotency.check_key(metadata.get(idempotency.HEADER))
            with self.service.admit() as slot:
                parsed = ScoreRequest.from_proto(request, rid, views)  # the parts: views into the message
                # A message that parse_views parsed whole holds protobuf's own copy of every part (and
                # `parsed` another): let it go before scoring, not after.
                del request
                answer = await self.service.clinical.answer(
                    lambda: self.service.score(
                        parsed, protocol="grpc", trace_headers=metadata, budget=budget
                    ),
                    parsed,
                    fmt=fmt,
                    key=key,
                    record=record,
                    budget=budget,
                    slot=slot,
                )
        except Exception as exc:
            record.emit(status_of(exc)[1])
            self._grpc_error(exc, rid, grpc_context, "Score")
            return scoring_pb2.ScoreResponse(request_id=rid)
        except asyncio.CancelledError:  # the caller cancelled: still one audit line
            record.emit(ClientGone.grpc_code)
            self.service.record("Score", "grpc", ClientGone.grpc_code)
            raise
        record.emit("OK")
        self.service.record("Score", "grpc", "OK")
        trailing = [("x-request-id", rid)]
        if answer.replayed:
            trailing.append(("idempotent-replayed", "true"))
        grpc_context.set_trailing_metadata(trailing)
        reply = answer.result.to_proto()
        if fmt != "json":
            reply.document, reply.document_type = answer.rendered.body, answer.rendered.content_type
        reply.hl7_delivery = answer.delivery
        return reply

    async def ListModels(self, request, grpc_context):  # noqa: N802
        from avpenet.v1 import scoring_pb2

        metadata = _metadata(grpc_context)
        rid = _request_id(metadata.get("x-request-id"), metadata.get("request_id"))
        record = audit.AuditRecord("ListModels", "grpc", rid)
        try:
            grpc_wire.parse(scoring_pb2.ListModelsRequest, request)
            token = _grpc_token(metadata)
            self.service.authenticate(token)
            record.api_key_id = audit.key_id(token)
            models = await self.service.models()
        except Exception as exc:
            record.emit(status_of(exc)[1])
            self._grpc_error(exc, rid, grpc_context, "ListModels")
            return scoring_pb2.ListModelsResponse()
        record.emit("OK")
        self.service.record("ListModels", "grpc", "OK")
        return models.to_proto()

    async def Check(self, request, grpc_context):  # noqa: N802
        from grpc_health.v1 import health_pb2

        if request.service not in HEALTH_SERVICES:
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(f"unknown service {request.service[:64]!r}")
            return health_pb2.HealthCheckResponse()
        ready = await self.service.ready()
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)

    def _grpc_error(self, exc: Exception, rid: str, grpc_context, method: str) -> None:
        _, code = status_of(exc)
        self.service.record(method, "grpc", code)
        self.service.refused(exc, "grpc")
        grpc_context.set_code(grpc.StatusCode[code])
        grpc_context.set_details(detail_of(exc))  # the gateway's own errors' text, else "internal error"
        grpc_context.set_trailing_metadata(grpc_trailing(exc, rid))  # request id, error class, retry-after
