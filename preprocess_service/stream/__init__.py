"""Bedside monitoring: one WebSocket per bed, audio chunks and face frames in, scores and alerts out.

    protocol.py     the messages (start, chunk headers, control) and events, close codes, per-stream config
    frames.py       a chunk's landmark frame or image, decoded
    timeline.py     frames placed by their capture time (a camera stall leaves faceless slots)
    faces.py        a window's face features read with the frames around it; when later frames settle them
    state.py        per-stream media buffers: sequence checks, one FaceLandmarker per video stream, windows
    samples.py      an audio chunk's samples, checked; a refused chunk's span kept as unheard (no sound)
    signals.py      signal_lost / signal_back events when a modality stops or returns
    alerts.py       pure alert logic: baseline, threshold run, suppression during handling, trend
    inbound.py      the bounded queue of chunks received, not yet processed; real-time pacing
    poison.py       a chunk whose processing fails again after a resume is refused, not given back again
    scoring.py      completed windows to Triton: the same ensemble call as clip scoring
    session.py      one connection: receive loop, bounded queues, stall timeout, scoring, event sender
    receiving.py    the session's receiving side: chunk checks, control-message limit, pacing
    limits.py       per-replica stream limits (Serve config `args.streams`)
    registry.py     the replica's streams: per-key limits, detached streams kept for resume
    checkpoints.py  every stream's alert state in a store all replicas share, for a resume elsewhere
    affinity.py     the Gateway's request router: a resume goes to the replica holding its stream
    metrics.py      active streams, lag, events by type, reconnects
    route.py        the `/v1/stream` WebSocket handler the Gateway ingress declares
    client.py       a Python client: open a stream, send chunks, read events, resume a dropped link
    replay.py       a recording streamed as a device sends it (`avpenet monitor`, the tests, the load driver)

Windows are cut and masked exactly as clip scoring cuts and masks them (avpenet.features.windows, .visual),
so a replayed recording gets the clip endpoint's window scores.
"""
