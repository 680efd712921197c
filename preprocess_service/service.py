"""The scoring service both protocols call: auth, admission, feature extraction, one Triton call, the answer.

Independent of Ray and of the wire format, so tests can run it in-process against a real Triton. The Ray app
(app.py) wraps it with FastAPI routes and gRPC methods; the feature stage is injected (a thread locally, the
FeatureExtractor deployment under Ray).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from opentelemetry.trace import SpanKind, Status, StatusCode

from preprocess_service import audit, fhir, memprofile, pinning, telemetry, warmup
from preprocess_service.auth import ApiKeys
from preprocess_service.budget import RequestBudget
from preprocess_service.clinical import Clinical, clip_sha256
from preprocess_service.cpu_work import cheap_to_decode, here_if
from preprocess_service.errors import TritonUnavailable, reason_of, status_of
from preprocess_service.extract import Extracted, extract
from preprocess_service.feature_stage import extract_features
from preprocess_service.limits import InFlightLimiter, Slot, check_upload_size, video_share
from preprocess_service.protocol import MediaPart, ModelInfo, ModelsResponse, ScoreRequest, ScoreResponse
from preprocess_service.responses import build_response
from preprocess_service.settings import GatewaySettings
from preprocess_service.triton_client import InferOutput, TritonClient
from preprocess_service.video_admission import MediaSecondsLimiter, video_seconds
from preprocess_service.watchdog import TritonWatchdog

log = logging.getLogger("avpenet.gateway")
# (request, trace carrier, the video's declared seconds read once at admission: 0 without video, the hop's
# deadline in seconds: its own, capped by the request's budget)
Extractor = Callable[[ScoreRequest, Mapping[str, str], float, float], Awaitable[Extracted]]


def media_digest(part: MediaPart) -> str:
    """What logs may say about an upload: a short SHA-256, never the bytes or the file name."""
    return part.sha256[:16]


def has_video(request: ScoreRequest) -> bool:
    """A `clip` (MP4 with sound) or a `video` part: the FeatureExtractor's path, face tracking included."""
    return request.clip is not None or request.video is not None


class ScoringService:
    def __init__(self, settings: GatewaySettings, extractor: Extractor | None = None) -> None:
        self.settings = settings
        self.keys = ApiKeys(settings.api_keys, settings.api_keys_file)
        if settings.auth_required and not self.keys.configured:
            raise ValueError(
                "API keys are required when the gateway is reachable from other hosts (non-loopback bind or "
                "gRPC enabled): set AVPENET_API_KEYS or AVPENET_API_KEYS_FILE"
            )
        telemetry.setup_tracing(settings.service_name)
        memprofile.start("gateway")  # only under `avpenet soak --memprofile`
        self.metrics = telemetry.Metrics()
        limits = settings.limits  # slots count Triton calls nobody waits for; full while Triton hangs: 503
        self.limiter = InFlightLimiter(
            limits.max_in_flight, limits.retry_after_s, also=lambda: self.triton.abandoned,
            full=lambda: self.watchdog.refuse_if_hung(limits.retry_after_s),
        )  # fmt: skip
        self.video_slots = video_share(limits)  # video never takes the light uploads' slots
        self.video_limiter = MediaSecondsLimiter(  # media seconds at the FeatureExtractor: video_admission.py
            limits.max_video_seconds_in_flight, limits.retry_after_s, max_wait_s=limits.max_video_wait_s
        )
        self.metrics.video_admit_share.set_function(lambda: self.video_limiter.share)  # read at each scrape
        self.triton = TritonClient(
            settings.triton_url,
            model=settings.model_name,
            timeout_s=settings.triton_timeout_s,
            timeout_per_window_s=settings.triton_timeout_per_window_s,
            retries=settings.triton_retries,
            backoff_s=settings.triton_backoff_s,
            retry_after_s=settings.limits.retry_after_s,
            ssl=settings.triton_ssl,
            root_certificates=settings.triton_root_certificates,
            lb_policy=settings.triton_lb_policy,
            refresh_s=settings.triton_refresh_s,
        )
        self.repository = pinning.FreshReads(self.triton.repository)  # reads shared by concurrent requests
        self.watchdog = TritonWatchdog(
            self.triton.probe,
            period_s=settings.watchdog_period_s,
            timeout_s=settings.watchdog_timeout_s,
            failures=settings.watchdog_failures,
            progress=lambda: self.triton.answered,
        )
        self.extractor = extractor or self._extract_in_thread
        self.clinical = Clinical(settings)  # formats, HL7 delivery, Idempotency-Key cache (clinical.py)
        audit.setup()
        self._warm: asyncio.Task | None = None  # the warm-up clip (warmup.py): the first ready() starts it

    def _extractor_for(self, request: ScoreRequest) -> Extractor:
        """Video goes to the injected extractor (the FeatureExtractor deployment: face tracking is the CPU
        hog, scaled apart). Light uploads (audio, landmarks) are decoded here on a worker thread: for them
        the hop (pickling the upload, a Ray round trip, another replica's queue) costs more than decoding."""
        return self.extractor if has_video(request) else self._extract_in_thread

    async def _extract_in_thread(
        self, request: ScoreRequest, carrier: Mapping[str, str], media_s: float = 0.0, timeout_s: float = 0.0
    ) -> Extracted:
        """Light uploads: tens of milliseconds, bounded by the upload limits rather than a deadline; a small
        raw one on the event loop (cpu_work.py)."""
        limits = self.settings.limits
        return await here_if(cheap_to_decode(request, limits), extract, request, limits, carrier)

    async def close(self) -> None:
        if self._warm is not None:
            self._warm.cancel()
            with contextlib.suppress(BaseException):
                await self._warm
        await self.watchdog.close()
        await self.triton.close()

    # --- requests -------------------------------------------------------------------------------------------
    def authenticate(self, token: str | None) -> None:
        self.keys.require(token)

    @contextlib.contextmanager
    def admit(self) -> Iterator[Slot]:
        """Admission for one request (429 when the replica is full), tracked by the in-flight gauge; the slot
        is handed to the Idempotency-Key cache, which gives it back while a retry waits (limits.Slot)."""
        self.watchdog.ensure_started()
        with self.limiter.admit() as slot:
            self.metrics.in_flight.inc()
            try:
                yield slot
            finally:
                self.metrics.in_flight.dec()

    def record(self, route: str, protocol: str, status: int | str) -> None:
        self.metrics.requests.labels(route, protocol, str(status)).inc()

    def refused(self, exc: BaseException, protocol: str) -> None:
        """Count a request answered with an error, by reason (the error class): attacks and broken clients
        show up as a rising reason, not only as a rising 4xx rate."""
        self.metrics.refusals.labels(reason_of(exc), protocol).inc()

    async def score(
        self,
        request: ScoreRequest,
        *,
        protocol: str,
        trace_headers: Mapping[str, str] | None = None,
        budget: RequestBudget | None = None,
    ) -> ScoreResponse:
        """Score one request (auth and admission done); raises InputError / GatewayError. `budget`: the
        request's time budget, started when the route received it (default: from now)."""
        start = time.perf_counter()
        budget = budget or self.settings.budget(trace_headers)
        parent = telemetry.extract_context(trace_headers or {})
        tracer = telemetry.tracer()
        with tracer.start_as_current_span("avpenet.score", context=parent, kind=SpanKind.SERVER) as span:
            span.set_attribute("avpenet.request_id", request.request_id)
            span.set_attribute("avpenet.protocol", protocol)
            try:
                response = await self._score(request, protocol, start, budget)
            except Exception as exc:
                status, code = status_of(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("avpenet.status", status)
                log.info(
                    "request %s %s failed: %s %s (%s)", request.request_id, protocol, status, code,
                    type(exc).__name__,
                )  # fmt: skip
                if status >= 500 and code == "INTERNAL":
                    log.exception("request %s: internal error", request.request_id)
                raise
            span.set_attribute("avpenet.score", response.score)
        return response

    async def _score(
        self, request: ScoreRequest, protocol: str, start: float, budget: RequestBudget
    ) -> ScoreResponse:
        self.watchdog.refuse_if_hung(self.settings.limits.retry_after_s)
        request.validate_combination()
        check_upload_size(request.upload_bytes, self.settings.limits.max_upload_bytes)
        digests = {name: media_digest(p) for name, p in request.parts().items()}
        log.info("request %s %s parts %s", request.request_id, protocol, digests)

        media_s = video_seconds(request, self.settings.limits.max_duration_s)  # None: no video
        if request.model_versions:  # a pin to a version not served is a 404 before any feature work
            with budget.bounds("checking the pinned model versions", self.settings.limits.retry_after_s):
                pinning.check(request.model_versions, ok := await self._served(budget), set(ok))
        extracted, waited_s = await extract_features(self, request, media_s, budget)
        if waited_s is not None:
            extracted.timings_ms["queue"] = waited_s * 1000.0
        t_triton = time.perf_counter()
        with telemetry.tracer().start_as_current_span("triton", kind=SpanKind.CLIENT) as span:
            span.set_attribute("avpenet.windows", extracted.n_windows)
            with budget.bounds("waiting for inference", self.settings.limits.retry_after_s):
                budget.check("before inference", self.settings.limits.retry_after_s)
                result, versions = await self._infer_pinned(request, extracted, budget)
        timings = dict(extracted.timings_ms)
        timings["triton"] = (time.perf_counter() - t_triton) * 1000.0
        timings["total"] = (time.perf_counter() - start) * 1000.0
        response = build_response(request, extracted, result, versions, timings, self.settings.model_name)
        recorded = fhir.parse_recorded_at(request.recorded_at) if request.recorded_at else None
        response = response.model_copy(update={"clip_sha256": clip_sha256(request), "recorded_at": recorded})

        kind = telemetry.request_kind(has_video(request), extracted.n_windows)
        self.metrics.observe_stages(timings, protocol, kind)
        self.metrics.clip_seconds.labels(protocol).inc(extracted.duration_s)
        self.metrics.windows.labels(protocol).inc(extracted.n_windows)
        self.metrics.scores.labels(result.model_version).observe(response.score)
        log.info(
            "request %s %s scored %d windows in %.0f ms", request.request_id, protocol, extracted.n_windows,
            timings["total"],
        )  # fmt: skip
        return response

    async def _infer_pinned(
        self, request: ScoreRequest, extracted: Extracted, budget: RequestBudget | None = None
    ) -> tuple[InferOutput, dict]:
        """One Triton call honouring the request's version pins, with the versions that produced it: read
        before and after the call, repeated once if a rollout changed them (pinning.py); `budget` caps it."""
        pins = request.model_versions
        for _ in range(2):
            before = await self._served(budget)
            pinning.check(pins, before, known=set(before))
            result = await self.triton.infer(
                extracted.inputs,
                request_id=request.request_id,
                headers=telemetry.inject_context(),
                model_version=pins.get(self.settings.model_name, ""),
                budget_s=None if budget is None else budget.remaining_s(),
            )
            after = await self._served(budget)
            if pinning.in_use(before) == pinning.in_use(after):
                return result, {**pinning.in_use(after), self.settings.model_name: result.model_version}
        raise TritonUnavailable(
            "model versions changed during the call (a rollout is in progress); retry",
            self.settings.limits.retry_after_s,
        )

    async def _served(self, budget: RequestBudget | None) -> pinning.Served:
        """READY versions from a shared read (FreshReads), waited for at most what is left of `budget`: the
        read's own deadline is Triton's (`triton_timeout_s`, 10 s), past a short budget's end."""
        async with asyncio.timeout(None if budget is None else budget.remaining_s()):
            return pinning.served(await self.repository.get())

    async def models(self) -> ModelsResponse:
        rows = await self.repository.get()
        return ModelsResponse(ensemble=self.settings.model_name, models=[ModelInfo(**r) for r in rows])

    async def ready(self) -> bool:
        """Triton's ensemble is loaded, the watchdog's last probe inferences answered (watchdog.py) AND this
        replica has scored its warm-up clip (warmup.py), so the first patient request is not a cold one."""
        self.watchdog.ensure_started()
        warmed = await self.warm()
        return warmed and self.watchdog.healthy and await self.triton.ready()

    async def warm(self, wait_s: float | None = None) -> bool:
        """Score the warm-up clip unless this replica has (a failed one is tried again), waiting at most
        `wait_s` (one Triton deadline by default); True once it has been scored. Never raises: not warm is
        not ready, not an error."""
        warm = self._start_warm_up(asyncio.get_running_loop())
        wait_s = self.settings.triton_timeout_s if wait_s is None else wait_s
        with contextlib.suppress(Exception):  # a failed or slow warm-up is "not ready"; retried next time
            await asyncio.wait_for(asyncio.shield(warm), wait_s)
        return warm.done() and not warm.cancelled() and warm.exception() is None

    def _start_warm_up(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
        failed = (
            self._warm is not None
            and self._warm.done()
            and (self._warm.cancelled() or self._warm.exception() is not None)
        )
        if self._warm is None or failed:
            self._warm = loop.create_task(self._warm_up(), name="gateway-warm-up")
        return self._warm

    async def _warm_up(self) -> None:
        """One synthetic clip through decode, features, Triton and response building; no metrics."""
        request = warmup.synthetic_request()
        extracted = await self._extract_in_thread(request, {})
        result, versions = await self._infer_pinned(request, extracted)
        timings = {**extracted.timings_ms, "triton": 0.0, "total": 0.0}
        build_response(request, extracted, result, versions, timings, self.settings.model_name)
