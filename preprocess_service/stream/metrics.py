"""Monitoring-stream metrics, in the gateway's registry (served on its `/metrics` with the rest).

Lag = from the arrival of the chunk that completed a window to its score event being queued for the client;
no per-stream label (stream ids are unbounded), the histogram's quantiles are over every stream's windows.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from preprocess_service.stream.protocol import CLOSE_CODES, EVENT_TYPES

ACTIVE = "avpenet_gateway_streams_active"  # gauge: connected streams; mode
HELD = "avpenet_gateway_streams_held"  # gauge: streams whose state this replica holds (connected + resumable)
LAG = "avpenet_gateway_stream_lag_seconds"  # histogram: mode
EVENTS = "avpenet_gateway_stream_events"  # counter (*_total): type
DROPPED = "avpenet_gateway_stream_dropped_frames"  # counter (*_total): frames dropped by flow control
CLOSES = "avpenet_gateway_stream_closes"  # counter (*_total): code
# counter (*_total): reconnects (a start with last_event >= 0) by result: resumed (its state held here),
# restored (its alert state from a checkpoint: the holder is gone), afresh (neither) or refused (closed 4400
# or 4429 after its start message was read: another start, its id still open elsewhere, a limit reached)
RESUMES = "avpenet_gateway_stream_resumes"
RESUME_RESULTS = ("resumed", "restored", "afresh", "refused")
MODES = ("landmarks", "video", "audio")
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = Gauge(ACTIVE, "Connected monitoring streams", ("mode",), registry=registry)
        self.held = Gauge(HELD, "Monitoring streams held (connected or resumable)", registry=registry)
        self.lag = Histogram(
            LAG, "Window completed to score sent", ("mode",), buckets=LAG_BUCKETS, registry=registry
        )
        self.events = Counter(EVENTS, "Monitoring events sent, by type", ("type",), registry=registry)
        self.dropped = Counter(DROPPED, "Video/landmark frames dropped by flow control", registry=registry)
        self.closes = Counter(
            CLOSES, "Monitoring streams closed, by close code", ("code",), registry=registry
        )
        self.resumes = Counter(
            RESUMES,
            "Stream reconnects: state held here, restored from a checkpoint, lost, or refused",
            ("result",),
            registry=registry,
        )
        for result in RESUME_RESULTS:
            self.resumes.labels(result)
        for mode in MODES:  # series exist from the start: dashboards see zeros, not gaps
            self.active.labels(mode)
            self.lag.labels(mode)
        for kind in EVENT_TYPES:
            self.events.labels(kind)
        for code in CLOSE_CODES:  # a counter first seen at 1 has no increase: AvpenetStreamsUnprocessable
            self.closes.labels(str(code))  # would miss a replica's first 4500
