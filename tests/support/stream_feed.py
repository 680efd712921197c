"""Feeding a StreamState as a device feeds a stream: one tick (1/FPS s of audio, one frame) at a time."""

from __future__ import annotations

import numpy as np

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.stream import protocol
from preprocess_service.stream.protocol import Start
from preprocess_service.stream.state import StreamState

STEP = contract.SAMPLES_PER_FRAME


def feed(state: StreamState, wave: np.ndarray | None, track: FaceTrack | None) -> list:
    """Send a recording tick by tick (1/FPS s of audio, one frame) as a device would; its windows."""
    out = []
    ticks = max(0 if track is None else track.n_frames, 0 if wave is None else -(-wave.size // STEP))
    for k in range(ticks):
        if wave is not None and k * STEP < wave.size:
            state.check_seq("audio", k)
            piece = wave[k * STEP : (k + 1) * STEP]
            state.add_audio({"rate": contract.SAMPLE_RATE}, memoryview(piece.astype("<f4").tobytes()))
        if track is not None and k < track.n_frames:
            state.check_seq("frame", k)
            state.add_frame({}, memoryview(protocol.landmark_frame_bytes(track, k)))
        out += state.ready()
    return out + state.finish()


def start(**kw) -> Start:
    """A landmarks-mode adult stream's start message, with `kw` over it."""
    return Start(**{"type": "start", "mode": "landmarks", "age_group": "adult", **kw})
