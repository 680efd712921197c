"""The Ray Serve application: `Gateway` (FastAPI ingress + gRPC) and `FeatureExtractor` (decode + track).

    HTTP  POST /v1/score ─┐                          ┌─ FeatureExtractor (CPU: decode, face tracking, windows)
                          ├─ Gateway ─ ScoringService┤
    gRPC  Scoring/Score ──┘   (auth, limits, FHIR)   └─ Triton ensemble (async gRPC, all windows in one call)

Deployed from serve_config.yaml (`import_path: preprocess_service.app:build_app`) both by `avpenet serve`
and by the k8s RayService. The gRPC proxy routes `/avpenet.v1.Scoring/<Method>` and
`/grpc.health.v1.Health/Check` to the Gateway method of the same name; reflection is Ray's own.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the class-based routes.

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve.handle import DeploymentHandle

from avpenet.errors import InputError, TooLarge
from preprocess_service import fhir
from preprocess_service.auth import bearer_token
from preprocess_service.errors import status_of
from preprocess_service.extract import Extracted, extract
from preprocess_service.multipart import parse_score_form
from preprocess_service.protocol import (
    ErrorResponse,
    ModelsResponse,
    ScoreRequest,
    ScoreResponse,
    new_request_id,
)
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings, Limits

log = logging.getLogger("avpenet.gateway")
SCORE_ROUTE = "/v1/score"
HEALTH_SERVICES = ("", "avpenet.v1.Scoring")

api = FastAPI(
    title="AVPENet Serve",
    version="1",
    description=(
        "Pain (0-10) of non-verbal patients from 3 s windows of non-speech sound and face. Scores are model "
        "estimates for clinical decision support, not diagnoses. Send `Authorization: Bearer <key>`."
    ),
)

_MEDIA = {"type": "string", "format": "binary"}
SCORE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "clip": {**_MEDIA, "description": "MP4/MOV/WebM/MKV video with its audio track"},
                        "audio": {
                            **_MEDIA,
                            "description": "WAV/FLAC/OGG/MP3 (with video/landmarks or alone)",
                        },
                        "video": {**_MEDIA, "description": "video without usable sound"},
                        "landmarks": {**_MEDIA, "description": "face-track .npz (privacy mode)"},
                        "age_group": {"type": "string", "enum": ["neonate", "adult", "unknown"]},
                        "subject_ref": {"type": "string", "example": "Patient/123"},
                        "encounter_ref": {"type": "string", "example": "Encounter/456"},
                    },
                }
            }
        },
    }
}
ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 415, 422, 429, 503, 504)}


def wants_fhir(accept: str | None) -> bool:
    return fhir.MEDIA_TYPE in (accept or "").lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (before it is all in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"upload is {declared} bytes; the limit is {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise TooLarge(f"upload exceeds the limit of {limit} bytes")
    return bytes(body)


def warm_up() -> None:
    """Import the feature stack and verify the face model file now, not on a patient's first request."""
    from avpenet.features import audio, tracker, windows  # noqa: F401

    tracker.model_bytes()
    with tracker.FaceTracker():  # loads mediapipe's graph once; a broken model fails the deploy, loudly
        pass


# Helpers sit above the deployments: Ray pickles a deployment class when it is decorated.
def _metadata(grpc_context) -> dict[str, str]:
    return {str(k).lower(): v for k, v in (grpc_context.invocation_metadata() or []) if isinstance(v, str)}


def _grpc_token(metadata: Mapping[str, str]) -> str | None:
    """`authorization: Bearer <key>` metadata (a bare key too: some tools add no scheme)."""
    value = metadata.get("authorization")
    if value is None:
        return None
    return bearer_token(value) or (value.strip() or None)


@serve.deployment(name="FeatureExtractor", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=4)
class FeatureExtractor:
    """Decoding, face tracking and window building; scaled apart: it is the CPU hog."""

    def __init__(self, limits: Mapping[str, Any] | None = None) -> None:
        from preprocess_service import telemetry

        self.limits = Limits.model_validate(dict(limits or {}))
        telemetry.setup_tracing("avpenet-features")
        warm_up()

    async def extract(self, request: ScoreRequest, carrier: Mapping[str, str]) -> Extracted | InputError:
        # An input error is returned, not raised, so its class (and so its status) survives Ray's wrapping.
        try:
            return await asyncio.to_thread(extract, request, self.limits, carrier)
        except InputError as exc:
            return exc


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
@serve.ingress(api)
class Gateway:
    def __init__(self, extractor: DeploymentHandle | None, args: Mapping[str, Any] | None = None) -> None:
        self.settings = GatewaySettings.load(args)
        logging.getLogger("avpenet").setLevel(self.settings.log_level)

        async def remote_extract(request: ScoreRequest, carrier: Mapping[str, str]) -> Extracted:
            result = await extractor.extract.remote(request, dict(carrier))
            if isinstance(result, BaseException):
                raise result
            return result

        self.service = ScoringService(self.settings, remote_extract if extractor is not None else None)

    # --- HTTP -----------------------------------------------------------------------------------------------
    @api.post(
        SCORE_ROUTE,
        summary="Score a clip for pain",
        openapi_extra=SCORE_OPENAPI,
        responses={200: {"model": ScoreResponse, "content": {fhir.MEDIA_TYPE: {}}}, **ERRORS},
    )
    async def score(self, request: Request) -> Response:
        """Multipart upload → JSON score (or a FHIR R4 Observation with `Accept: application/fhir+json`)."""
        rid = new_request_id(request.headers.get("x-request-id"))
        try:
            self.service.authenticate(bearer_token(request.headers.get("authorization")))
            with self.service.admit():
                body = await read_body(request, self.settings.limits.max_upload_bytes)
                parsed = await asyncio.to_thread(
                    parse_score_form, body, request.headers.get("content-type"), rid
                )
                del body
                result = await self.service.score(
                    parsed, protocol="http", trace_headers=dict(request.headers)
                )
        except Exception as exc:
            return self._http_error(exc, rid, SCORE_ROUTE)
        headers: dict[str, str] = {}  # Ray Serve's proxy sets X-Request-ID (the caller's, or its own = rid)
        self.service.record(SCORE_ROUTE, "http", 200)
        if wants_fhir(request.headers.get("accept")):
            text = fhir.observation_json(
                result, subject_ref=parsed.subject_ref, encounter_ref=parsed.encounter_ref
            )
            return Response(text, media_type=fhir.MEDIA_TYPE, headers=headers)
        return JSONResponse(result.to_json(), headers=headers)

    @api.get("/v1/models", response_model=ModelsResponse, responses=ERRORS, summary="Model versions served")
    async def list_models(self, request: Request) -> Response:
        rid = new_request_id(request.headers.get("x-request-id"))
        try:
            self.service.authenticate(bearer_token(request.headers.get("authorization")))
            models = await self.service.models()
        except Exception as exc:
            return self._http_error(exc, rid, "/v1/models")
        self.service.record("/v1/models", "http", 200)
        return JSONResponse(models.model_dump(mode="json"))

    @api.get("/healthz", summary="Liveness: the gateway process answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz", summary="Readiness: Triton's ensemble is ready", responses={503: {"model": ErrorResponse}}
    )
    async def readyz(self) -> Response:
        if await self.service.ready():
            return JSONResponse({"status": "ready", "model": self.settings.model_name})
        retry = str(self.settings.limits.retry_after_s)
        return JSONResponse(
            {"status": "not ready", "model": self.settings.model_name},
            status_code=503,
            headers={"Retry-After": retry},
        )

    @api.get("/metrics", summary="Prometheus metrics of this replica", response_class=PlainTextResponse)
    async def metrics(self) -> Response:
        return Response(self.service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def _http_error(self, exc: Exception, rid: str, route: str) -> Response:
        status, _ = status_of(exc)
        self.service.record(route, "http", status)
        detail = str(exc) if status < 500 or hasattr(exc, "retry_after_s") else "internal error"
        headers = {}
        retry = getattr(exc, "retry_after_s", None)
        if retry:
            headers["Retry-After"] = str(retry)
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        body = ErrorResponse(error=type(exc).__name__, detail=detail, request_id=rid)
        return JSONResponse(body.model_dump(), status_code=status, headers=headers)

    # --- gRPC (method names = rpc names) --------------------------------------------------------------------
    async def Score(self, request, grpc_context):  # noqa: N802 (gRPC method name)
        from avpenet.v1 import scoring_pb2

        metadata = _metadata(grpc_context)
        rid = new_request_id(request.request_id or metadata.get("x-request-id") or metadata.get("request_id"))
        try:
            self.service.authenticate(_grpc_token(metadata))
            with self.service.admit():
                parsed = ScoreRequest.from_proto(request, rid)
                result = await self.service.score(parsed, protocol="grpc", trace_headers=metadata)
        except Exception as exc:
            self._grpc_error(exc, rid, grpc_context, "Score")
            return scoring_pb2.ScoreResponse(request_id=rid)
        self.service.record("Score", "grpc", "OK")
        grpc_context.set_trailing_metadata([("x-request-id", rid)])
        return result.to_proto()

    async def ListModels(self, request, grpc_context):  # noqa: N802
        from avpenet.v1 import scoring_pb2

        metadata = _metadata(grpc_context)
        rid = new_request_id(metadata.get("x-request-id"))
        try:
            self.service.authenticate(_grpc_token(metadata))
            models = await self.service.models()
        except Exception as exc:
            self._grpc_error(exc, rid, grpc_context, "ListModels")
            return scoring_pb2.ListModelsResponse()
        self.service.record("ListModels", "grpc", "OK")
        return models.to_proto()

    async def Check(self, request, grpc_context):  # noqa: N802 (grpc.health.v1.Health/Check)
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
        status, code = status_of(exc)
        self.service.record(method, "grpc", code)
        grpc_context.set_code(grpc.StatusCode[code])
        grpc_context.set_details(
            str(exc) if status < 500 or hasattr(exc, "retry_after_s") else "internal error"
        )
        trailing = [("x-request-id", rid)]
        retry = getattr(exc, "retry_after_s", None)
        if retry:
            trailing.append(("retry-after", str(retry)))
        grpc_context.set_trailing_metadata(trailing)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder for serve_config.yaml; `args` = GatewaySettings fields (AVPENET_* env wins)."""
    settings = GatewaySettings.load(
        args
    )  # validates early: a bad config fails the deploy, not the first request
    extractor = FeatureExtractor.bind(settings.limits.model_dump())
    return Gateway.bind(extractor, dict(args or {}))
