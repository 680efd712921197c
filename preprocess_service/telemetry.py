"""Gateway metrics (prometheus-client, served on the gateway's `/metrics`) and OpenTelemetry tracing.

Metric names are the `avpenet_gateway_*` constants below; monitoring/ and loadtests/ import them. Traces: one
span per request with a child per stage (decode, features, triton); a caller's W3C `traceparent` is the
parent, and the triton span's context is sent on as gRPC metadata so Triton's own trace joins the same trace.
The exporter follows the standard OTEL_* variables (`OTEL_TRACES_EXPORTER=otlp|console|none`, or any
`OTEL_EXPORTER_OTLP_*ENDPOINT`); with none set, spans are created but not exported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import context, propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from avpenet import contract

STAGES = ("queue", "decode", "features", "triton", "total")  # queue: a video's wait for admission
# What was scored, as the stage histogram's `kind` label: latency differs by an order of magnitude between
# them, so one p99 over all would hide a slow light request under video and long clips (the alert rules set
# a threshold per kind). `video`: a clip or video part (FeatureExtractor: admission, decode, face tracking);
# `light`: audio and/or landmarks only, decoded in the gateway. `_long`: more than LONG_WINDOWS windows.
KINDS = ("light", "light_long", "video", "video_long")
# 20 windows (a 22-s clip): past it the Triton call's default deadline (10 s) scales per window (0.5 s each);
# bedside requests (3 s: 1 window, 10 s: 8) stay below, the minute's clip (58 windows) is above.
LONG_WINDOWS = round(contract.DEADLINE_S / contract.DEADLINE_PER_WINDOW_S)
REQUESTS = "avpenet_gateway_requests"  # counter (exposed as *_total): route, protocol, status
STAGE_SECONDS = "avpenet_gateway_stage_seconds"  # histogram: stage, protocol, kind (KINDS)
CLIP_SECONDS = "avpenet_gateway_clip_seconds"  # counter: media seconds scored, protocol
WINDOWS = "avpenet_gateway_windows"  # counter: 3 s windows sent to Triton
IN_FLIGHT = "avpenet_gateway_in_flight_requests"  # gauge
SCORES = "avpenet_gateway_score"  # histogram of clip scores: model_version (drift watching)
REFUSALS = "avpenet_gateway_refusals"  # counter: reason (error class), protocol; every non-success answer
VIDEO_ADMIT_SHARE = "avpenet_gateway_video_admit_share"  # gauge: video_admission.MediaSecondsLimiter.share
METRIC_NAMES = (
    REQUESTS,
    STAGE_SECONDS,
    CLIP_SECONDS,
    WINDOWS,
    IN_FLIGHT,
    SCORES,
    REFUSALS,
    VIDEO_ADMIT_SHARE,
)

# Latency buckets from 5 ms (a landmarks file) to 60 s (the proxies' request_timeout_s: nothing is answered
# later), so a p99 past the 30-s threshold of long videos reads as such instead of capping at 30 (+Inf).
# Every alert threshold (2, 10, 30 s) is a bucket edge: a threshold inside a bucket is compared with an
# interpolation (with 1 and 2.5 s edges, light requests all taking 1.1 s read as a p99 of 2.49 s and paged).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SCORE_BUCKETS = tuple(float(b) for b in range(int(contract.SCORE_MIN) + 1, int(contract.SCORE_MAX) + 1))


class Metrics:
    """The gateway's metrics in a registry of its own (Ray's and Triton's metrics stay on their own ports)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(REQUESTS, "Requests answered", ("route", "protocol", "status"), registry=r)
        self.stage_seconds = Histogram(
            STAGE_SECONDS,
            "Latency per stage and request kind",
            ("stage", "protocol", "kind"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.clip_seconds = Counter(CLIP_SECONDS, "Seconds of media scored", ("protocol",), registry=r)
        self.windows = Counter(WINDOWS, "3 s windows scored", ("protocol",), registry=r)
        self.in_flight = Gauge(IN_FLIGHT, "Scoring requests in flight in this replica", registry=r)
        self.scores = Histogram(
            SCORES,
            "Clip scores (0-10) per model version",
            ("model_version",),
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            REFUSALS, "Requests refused or failed, by reason", ("reason", "protocol"), registry=r
        )
        self.video_admit_share = Gauge(
            VIDEO_ADMIT_SHARE,
            "Share of a clip's deadline video admission lets the extractor's estimated time fill "
            "(its ceiling unless started clips missed their deadline)",
            registry=r,
        )
        for stage in STAGES:  # series exist from the start, so dashboards and alerts see zeros, not gaps
            for protocol in ("http", "grpc"):
                for kind in KINDS:
                    self.stage_seconds.labels(stage, protocol, kind)

    def observe_stages(self, timings_ms: Mapping[str, float], protocol: str, kind: str) -> None:
        if kind not in KINDS:  # a bounded label: an unknown value is a bug, not a new series
            raise ValueError(f"request kind {kind!r} is not one of {KINDS}")
        for stage, ms in timings_ms.items():
            if stage in STAGES:
                self.stage_seconds.labels(stage, protocol, kind).observe(ms / 1000.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def request_kind(video: bool, windows: int) -> str:
    """The `kind` label of a scored request (KINDS): what it sent and how many windows it carried."""
    return ("video" if video else "light") + ("_long" if windows > LONG_WINDOWS else "")


# --- tracing ------------------------------------------------------------------------------------------------
def setup_tracing(service_name: str) -> trace.TracerProvider:
    """Install an SDK tracer provider once per process, exporting as the OTEL_* environment says."""
    current = trace.get_tracer_provider()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = _exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _exporter_from_env():
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint_set = any(k.startswith("OTEL_EXPORTER_OTLP_") and k.endswith("ENDPOINT") for k in os.environ)
    if not names:
        names = "otlp" if endpoint_set else "none"
    name = names.split(",")[0].strip()
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        )
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()  # endpoint, headers, TLS and timeout from OTEL_EXPORTER_OTLP_*
    raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported here (use otlp, console or none)")


_TRACER: tuple[object, trace.Tracer] | None = None  # (the provider it came from, the tracer)


def tracer() -> trace.Tracer:
    """The gateway's tracer, made once per tracer provider: `get_tracer` builds a new Tracer (scope,
    attributes) on every call, and a request asks for it at each stage."""
    global _TRACER
    provider = trace.get_tracer_provider()
    if _TRACER is None or _TRACER[0] is not provider:
        _TRACER = (provider, provider.get_tracer("preprocess_service"))
    return _TRACER[1]


def extract_context(carrier: Mapping[str, str]) -> context.Context:
    """The caller's trace context from `traceparent`/`tracestate` headers or metadata (lower-case keys)."""
    return propagate.extract({k.lower(): v for k, v in carrier.items()})


def inject_context(carrier: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The current span's context as W3C headers, to pass on to Triton or another deployment."""
    out: dict[str, str] = dict(carrier or {})
    propagate.inject(out)
    return out
