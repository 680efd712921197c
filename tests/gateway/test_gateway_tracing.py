"""Traces and Triton failures, with the scoring service in-process (no Ray) against the real Triton.

Spans are read with the OpenTelemetry SDK's in-memory exporter: one `avpenet.score` span per request whose
parent is the caller's W3C traceparent, a child per stage, and the trace context sent on to Triton as gRPC
metadata (captured at the client call).
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.event_loop import within
from support.gateway import face_track, wav_bytes

from preprocess_service.errors import TritonUnavailable, status_of
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
HANG_GUARD_S = 120.0  # far beyond the 3 s deadline configured below; reaching it means a hang


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def request() -> ScoreRequest:
    return ScoreRequest(
        audio=MediaPart(data=wav_bytes(3.5)),
        landmarks=MediaPart(data=face_track(3.5).to_npz_bytes()),
        age_group="adult",
    )


def test_span_per_stage_with_propagated_traceparent(triton_server, spans):
    settings = GatewaySettings.load({"triton_url": triton_server.grpc_url, "grpc_enabled": False}, {})
    sent_headers: list[dict] = []

    async def go():
        service = ScoringService(settings)
        real_infer = service.triton._client.infer

        async def spy(*args, **kwargs):
            sent_headers.append(dict(kwargs.get("headers") or {}))
            return await real_infer(*args, **kwargs)

        service.triton._client.infer = spy
        try:
            return await service.score(
                request(), protocol="http", trace_headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
            )
        finally:
            await service.close()

    spans.clear()
    result = asyncio.run(go())
    assert len(result.timeline) == 2
    finished = {s.name: s for s in spans.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)}
    assert {"avpenet.score", "decode", "features", "triton"} <= set(finished)
    root = finished["avpenet.score"]
    assert root.parent is not None and root.parent.span_id == int(CALLER_SPAN, 16)  # the caller's span
    for stage in ("decode", "features", "triton"):
        assert finished[stage].parent.span_id == root.context.span_id, stage
    assert root.attributes["avpenet.request_id"] == result.request_id
    # Triton received the triton span's context, in the caller's trace.
    (headers,) = sent_headers
    version, trace_id, parent_id, _ = headers["traceparent"].split("-")
    assert trace_id == TRACE_ID and int(parent_id, 16) == finished["triton"].context.span_id


def test_triton_down_is_503_and_not_ready(spans, refused_port):
    settings = GatewaySettings.load(
        {"triton_url": f"127.0.0.1:{refused_port}", "grpc_enabled": False, "triton_timeout_s": 3}, {}
    )

    async def go():
        service = ScoringService(settings)
        try:
            assert not await service.ready()
            await service.score(request(), protocol="grpc")
        finally:
            await service.close()

    with pytest.raises(TritonUnavailable) as info:  # `within`: a hang guard, not a speed check
        asyncio.run(within(go(), HANG_GUARD_S))
    assert status_of(info.value) == (503, "UNAVAILABLE") and info.value.retry_after_s >= 1
    failed = [s for s in spans.get_finished_spans() if s.name == "avpenet.score" and not s.status.is_ok]
    assert failed
