"""Bedside monitoring: one WebSocket per bed, audio chunks and face frames in, scores and alerts out.

    protocol.py  the messages (start, chunk headers, control) and events, close codes, per-stream config
    alerts.py    pure alert logic: baseline, threshold run, suppression during handling, trend
    state.py     per-stream media buffers: sequence checks, one FaceLandmarker per video stream, windows
    session.py   one connection: receive loop, bounded queues, stall timeout, scoring, event sender
    registry.py  the replica's streams: per-key limits, detached streams kept for resume
    metrics.py   active streams, lag, events by type
    route.py     the `/v1/stream` WebSocket handler the Gateway ingress declares
    client.py    a Python client (used by `avpenet monitor`, the tests and the load driver)

Windows are cut exactly as clip scoring cuts them (avpenet.features.windows), so a replayed recording gets
the clip endpoint's window scores.
"""
