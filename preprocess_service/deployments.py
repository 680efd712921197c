"""The two Ray Serve deployments: `Gateway` (FastAPI + gRPC ingress) and `FeatureExtractor` (decode + track).

    HTTP  POST /v1/score ─┐                          ┌─ FeatureExtractor (CPU: decode, face tracking, windows)
                          ├─ Gateway ─ ScoringService┤
    gRPC  Scoring/Score ──┘   (auth, limits, FHIR)   └─ Triton ensemble (async gRPC, all windows in one call)

The HTTP routes are declared here because Ray Serve binds FastAPI routes to methods of the ingress class;
their bodies are in http_routes.py, the gRPC methods in grpc_methods.py.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the class-based routes.

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from avpenet.errors import InputError
from preprocess_service import http_routes
from preprocess_service.errors import FeaturesUnavailable
from preprocess_service.extract import Extracted, extract
from preprocess_service.grpc_methods import GrpcMethods
from preprocess_service.openapi import (
    API_INFO,
    ERRORS,
    MODELS_OPENAPI,
    MODELS_ROUTE,
    SCORE_OPENAPI,
    SCORE_RESPONSES,
    SCORE_ROUTE,
)
from preprocess_service.openapi import complete as complete_openapi
from preprocess_service.protocol import ErrorResponse, ModelsResponse, ScoreRequest
from preprocess_service.ray_metrics import RayMirror
from preprocess_service.serve_config import GATEWAY, GATEWAY_MAX_ONGOING_REQUESTS, check_slots
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings, Limits
from preprocess_service.stream import affinity
from preprocess_service.stream.protocol import STREAM_ROUTE
from preprocess_service.stream.route import StreamHub, serve_stream

api = FastAPI(**API_INFO)
_generate_openapi = api.openapi


def _openapi() -> dict[str, Any]:
    """FastAPI's document of the routes, with the security scheme they name (openapi.complete); cached."""
    if api.openapi_schema is None:
        complete_openapi(_generate_openapi())  # FastAPI keeps the document it made in api.openapi_schema
    return api.openapi_schema


api.openapi = _openapi  # type: ignore[method-assign]


def announce_tracking(limits: Limits) -> None:
    """A replica told to track fewer video frames than the reference was evaluated on says so at start: the
    scores then come from tracks the published figures do not describe (docs/EVALUATION.md)."""
    if limits.track_every != 1:
        logging.getLogger("avpenet.features").warning(
            "limits.track_every=%d: the face landmarker reads every %d. video frame, the frames between "
            "interpolated; the reference was trained and evaluated on every frame (docs/EVALUATION.md, "
            "Tracking fewer frames)",
            limits.track_every,
            limits.track_every,
        )


# The Gateway's health check waits at most this for its warm-up clip: under Serve's health-check timeout
# (30 s by default), past which Serve counts the replica as failed and replaces it.
WARM_UP_WAIT_S = 20.0


def warm_up() -> None:
    """Import the feature stack and verify the face model file now, not on a patient's first request."""
    from avpenet.features import audio, tracker, windows  # noqa: F401

    tracker.model_bytes()
    with tracker.pooled():  # loads mediapipe's graph; a broken model fails the deploy, loudly, and the
        pass  # landmarker waits in the pool for the first clip


@serve.deployment(name="FeatureExtractor", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class FeatureExtractor:
    """Decoding, face tracking and window building; scaled apart: it is the CPU hog.

    It takes every call the gateways admit (max_ongoing_requests well above its work) and runs
    `limits.features_threads` of them at once; the rest wait here, in order. Calls that wait in Serve's
    router instead, because the replica is at max_ongoing_requests, are sent, rejected and sent again while
    they wait: several times the caller's CPU per call, and the replica idle between a call finishing and
    the router's next successful send (measured: preprocess_service/README.md, *Admission*).
    """

    def __init__(self, limits: Mapping[str, Any] | None = None) -> None:
        from preprocess_service import memprofile, telemetry

        self.limits = Limits.model_validate(dict(limits or {}))
        self.slots = asyncio.Semaphore(self.limits.features_threads)
        announce_tracking(self.limits)
        telemetry.setup_tracing("avpenet-features")
        memprofile.start("features")  # only under `avpenet soak --memprofile`
        warm_up()

    async def extract(
        self, request: ScoreRequest, carrier: Mapping[str, str], deadline: float | None = None
    ) -> Extracted | InputError | None:
        """The request's model inputs; None when the work was stopped because nobody waits for it any more:
        the caller cancelled it (Serve cancels this task) or its wall-clock `deadline` (time.time()) passed.
        The worker thread checks before each decoded frame, so a refused request stops costing CPU."""
        from avpenet.features.tracker import Stopped

        cancelled = threading.Event()

        def stop() -> bool:
            return cancelled.is_set() or (deadline is not None and time.time() > deadline)

        # An input error is returned, not raised, so its class (and so its status) survives Ray's wrapping.
        try:
            async with self.slots:  # a caller that gave up while it waited is not decoded at all
                if stop():
                    return None
                return await asyncio.to_thread(extract, request, self.limits, carrier, stop=stop)
        except asyncio.CancelledError:
            cancelled.set()  # the thread is not cancelled with this task: tell it to stop
            raise
        except InputError as exc:
            return exc
        except Stopped:
            return None


# BackPressureError: every FeatureExtractor replica's queue is full (max_queued_requests) - busy, not broken
UNAVAILABLE = (
    TimeoutError,
    RayActorError,
    ReplicaUnavailableError,
    DeploymentUnavailableError,
    BackPressureError,
)


async def extract_remotely(
    extractor: DeploymentHandle,
    request: ScoreRequest,
    carrier: Mapping[str, str],
    settings: GatewaySettings,
    media_s: float = 0.0,
    timeout_s: float | None = None,
) -> Extracted:
    """One call to the FeatureExtractor, bounded by `timeout_s` (default: `settings.features_deadline_s`;
    the gateway caps it by the request's time budget): a dead, restarting or saturated replica is a 503 +
    Retry-After then, not a caller waiting for Serve to bring a new one up. The request is cancelled when the
    caller stops waiting (deadline or disconnect), and the replica also gets the deadline, so it stops
    decoding and tracking what nobody will read."""
    timeout = settings.features_deadline_s(media_s) if timeout_s is None else timeout_s
    response = extractor.extract.remote(request, dict(carrier), time.time() + timeout)
    try:
        result = await asyncio.wait_for(response, timeout)
    except UNAVAILABLE as exc:
        response.cancel()
        why = {TimeoutError: f"did not finish within {timeout:.0f} s", BackPressureError: "is busy"}
        why = next((text for kind, text in why.items() if isinstance(exc, kind)), "unavailable")
        raise FeaturesUnavailable(
            f"video feature extraction {why}; send the clip again",
            settings.limits.retry_after_s,
        ) from exc
    except asyncio.CancelledError:  # the caller went away: so does the work
        response.cancel()
        raise
    if result is None:  # the replica reached the deadline first (clocks differ slightly)
        raise FeaturesUnavailable(
            f"video feature extraction did not finish within {timeout:.0f} s; send the clip again",
            settings.limits.retry_after_s,
        )
    if isinstance(result, BaseException):
        raise result
    return result


@serve.deployment(
    name=GATEWAY,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=GATEWAY_MAX_ONGOING_REQUESTS,
    request_router_config=affinity.ROUTER_CONFIG,
)
@serve.ingress(api)
class Gateway(GrpcMethods):
    def __init__(self, extractor: DeploymentHandle | None, args: Mapping[str, Any] | None = None) -> None:
        self.settings = GatewaySettings.load(args)
        logging.getLogger("avpenet").setLevel(self.settings.log_level)
        # The deploy-time check again, with this pod's AVPENET_* environment (e.g. AVPENET_MAX_IN_FLIGHT):
        # a replica whose streams could fill its Ray slots fails to start, with the value to set.
        check_slots(self.settings, serve.get_replica_context()._deployment_config.max_ongoing_requests)

        async def remote_extract(
            request: ScoreRequest, carrier: Mapping[str, str], media_s: float, timeout_s: float
        ) -> Extracted:
            return await extract_remotely(extractor, request, carrier, self.settings, media_s, timeout_s)

        self.service = ScoringService(self.settings, remote_extract if extractor is not None else None)
        # This replica's metrics on Ray's metrics port too, which k8s scrapes pod by pod (ray_metrics.py).
        self.streams = StreamHub(self.service)  # bedside monitoring streams held by this replica
        self.metrics_mirror = RayMirror(self.service.metrics.registry).start()

    async def check_health(self) -> None:
        """Serve's health check, which Serve also runs once before the replica takes any request: the warm-up
        clip is scored here (warmup.py), so a new replica's first patient request is not a cold one (it paid
        ~0.7 s of imports and first runs). `/readyz` alone did not ensure it: Serve routes to a replica
        whether or not a probe ever reached it. Never fails for Triton: a replica that cannot reach it stays
        up, answers 503 with the reason and reports not ready; later checks try the warm-up again."""
        await self.service.warm(min(self.settings.triton_timeout_s, WARM_UP_WAIT_S))

    async def __del__(self) -> None:
        """Serve's graceful stop of this replica (scale-down, redeploy), run after its requests drained:
        Triton calls still running (their callers gone) end before their channels close, because closing a
        channel under a call cancels it, which Triton 2.51 may not survive (docs/RELIABILITY.md, Faults)."""
        self.metrics_mirror.stop()
        await self.streams.close()
        await self.service.close()

    def record_routing_stats(self) -> dict[str, Any]:
        """What Serve's routers read (stream/affinity.py): the streams this replica holds, for resumes."""
        return affinity.routing_stats(self.streams.registry.attach_times())

    @api.post(
        SCORE_ROUTE, summary="Score a clip for pain", openapi_extra=SCORE_OPENAPI, responses=SCORE_RESPONSES
    )
    async def score(self, request: Request) -> Response:
        """Multipart upload → JSON score (or a FHIR R4 Observation with `Accept: application/fhir+json`)."""
        return await http_routes.score(self.service, request)

    @api.get(
        MODELS_ROUTE,
        response_model=ModelsResponse,
        responses=ERRORS,
        summary="Model versions served",
        openapi_extra=MODELS_OPENAPI,
    )
    async def list_models(self, request: Request) -> Response:
        return await http_routes.list_models(self.service, request)

    @api.websocket(STREAM_ROUTE)
    async def stream(self, websocket: WebSocket) -> None:
        """Bedside monitoring: audio and face frames in, scores and alerts out (see stream/)."""
        await serve_stream(self.streams, websocket)

    @api.get("/healthz", summary="Liveness: the gateway process answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz", summary="Readiness: Triton's ensemble is ready", responses={503: {"model": ErrorResponse}}
    )
    async def readyz(self) -> Response:
        return await http_routes.readyz(self.service)

    @api.get("/metrics", summary="Prometheus metrics of this replica", response_class=PlainTextResponse)
    async def metrics(self) -> Response:
        return http_routes.metrics(self.service)
