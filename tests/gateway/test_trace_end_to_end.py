"""One trace end to end: the gateway's spans and Triton's own spans, for every ensemble step, under the
caller's trace id — both exported over OTLP/HTTP to a receiver on loopback (tests/support/otlp_receiver.py).

Triton runs with OpenTelemetry tracing (`ensemble.tracing.otel_args`, every request sampled); the gateway's
scoring service runs in-process with its exporter chosen from the standard OTEL_* variables, as in a pod.
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from support.gateway import face_track, wav_bytes
from support.otlp_receiver import OtlpReceiver

from avpenet import contract
from ensemble.server import TritonServer
from ensemble.tracing import otel_args
from preprocess_service import telemetry
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

pytestmark = pytest.mark.integration

# Triton's exporter drops a batch whose POST times out (no retry), which a saturated box can cause: up to
# ATTEMPTS requests, each in a trace of its own, and the first trace that arrives whole is checked.
TRACE_IDS = (
    "5af7183fb1d4cf5f8e2a4c0d9b6e3a71",
    "6b08294fc2e5d06a9f3b5d1e0c7f4b82",
    "7c193a50d3f6e17ba04c6e2f1d805c93",
)
CALLER_SPAN = "b7ad6b7169203331"
GATEWAY_SPANS = {"avpenet.score", "decode", "features", "triton"}
WANTED = GATEWAY_SPANS | {m.name for m in contract.PARTS}
EXPORT_WAIT_S = 30.0  # hang guard per attempt: both exporters post within a second on an idle machine


class _Switch(SpanProcessor):
    """Forwards spans only while this test runs (the global provider outlives it; processors can't go)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner, self.on = inner, True

    def on_end(self, span) -> None:
        if self.on:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        """Once: the test ends it, and the provider's exit hook asks again (the exporter would warn)."""
        if self.on:
            self.on = False
            self.inner.shutdown()


@pytest.fixture
def receiver(monkeypatch):
    with OtlpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{rx.endpoint}/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = telemetry.setup_tracing("avpenet-gateway")  # exports to rx (the variables above)
            try:
                yield rx
            finally:  # later tests' spans would go on being posted, and retried, to the closed receiver
                provider.shutdown()
            return
        switch = _Switch(SimpleSpanProcessor(telemetry._exporter_from_env()))
        provider.add_span_processor(switch)
        try:
            yield rx
        finally:
            switch.shutdown()


def missing(rx: OtlpReceiver, trace_id: str) -> set[str]:
    return WANTED - {s.name for s in rx.trace(trace_id)}


def score_in_trace(settings: GatewaySettings, trace_id: str) -> None:
    async def go():
        service = ScoringService(settings)
        try:
            await service.score(
                ScoreRequest(
                    audio=MediaPart(data=wav_bytes(3.5)),
                    landmarks=MediaPart(data=face_track(3.5).to_npz_bytes()),
                    age_group="adult",
                ),
                protocol="http",
                trace_headers={"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"},
            )
        finally:
            await service.close()

    asyncio.run(go())


def test_one_trace_holds_the_gateways_spans_and_tritons_per_step_spans(receiver):
    with TritonServer(extra_args=otel_args(f"{receiver.endpoint}/v1/traces", rate=1)) as triton:
        settings = GatewaySettings.load({"triton_url": triton.grpc_url, "grpc_enabled": False}, {})
        gaps = {}
        for trace_id in TRACE_IDS:
            score_in_trace(settings, trace_id)
            if receiver.wait_for(lambda rx, t=trace_id: not missing(rx, t), EXPORT_WAIT_S):
                break
            gaps[trace_id] = missing(receiver, trace_id)
        else:
            pytest.fail(f"no trace arrived whole; missing spans per trace: {gaps}")

    spans = receiver.trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    gateway = {s.name: s for s in spans if s.name in GATEWAY_SPANS}
    assert gateway["avpenet.score"].parent_id == CALLER_SPAN
    assert all(s.service != "triton" for s in gateway.values())
    # Triton's request span hangs under the gateway's triton span: the context crossed the gRPC call
    requests = [s for s in spans if s.service == "triton" and s.name == "InferRequest"]
    assert requests and all(r.parent_id == gateway["triton"].span_id for r in requests)
    # under it the ensemble, and under the ensemble one span per step, each with its compute span
    ensembles = [s for s in spans if s.name == contract.ENSEMBLE.name]
    assert ensembles and all(by_id[e.parent_id].name == "InferRequest" for e in ensembles)
    for part in contract.PARTS:
        steps = [s for s in spans if s.name == part.name]
        assert steps, part.name
        for step in steps:
            assert by_id[step.parent_id].name == contract.ENSEMBLE.name
            assert step.attributes["triton.model_name"] == part.name
            assert any(c.parent_id == step.span_id and c.name == "compute" for c in spans)
