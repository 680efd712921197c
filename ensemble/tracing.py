"""Triton's own OpenTelemetry traces: the `--trace-config` flags that make tritonserver export them.

Triton 2.51 (the wheel's binary, and the NGC 24.10 image) has an `opentelemetry` trace mode: it reads the
W3C `traceparent` a client sends as gRPC metadata and records, under that parent, an `InferRequest` span,
a span for the ensemble and one per ensemble step (each with a `compute` child), posted as OTLP/JSON over
HTTP. The gateway sends the context of its `triton` span, so one trace holds both sides.
"""

from __future__ import annotations

DEFAULT_RATE = 1000  # Triton samples 1 request in `rate`; 1 traces every request
SERVICE_NAME = "triton"


def otel_args(endpoint: str, *, rate: int = DEFAULT_RATE, service_name: str = SERVICE_NAME) -> list[str]:
    """tritonserver flags exporting 1 in `rate` requests to the OTLP/HTTP `endpoint` (`host:port/v1/traces`,
    the scheme optional). The batch processor posts within ~0.2 s, not in 5 s, so a trace is whole soon."""
    if rate < 1:
        raise ValueError(f"trace rate must be >= 1 (1 in N requests traced); got {rate}")
    url = endpoint.removeprefix("http://")
    return [
        "--trace-config=mode=opentelemetry",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=rate={rate}",
        "--trace-config=count=-1",
        f"--trace-config=opentelemetry,url={url}",
        f"--trace-config=opentelemetry,resource=service.name={service_name}",
        "--trace-config=opentelemetry,bsp_schedule_delay=200",
    ]
