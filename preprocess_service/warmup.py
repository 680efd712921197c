"""The gateway's warm-up: one synthetic clip through its own scoring path before the replica takes a request
(Serve's first health check, `Gateway.check_health`) and before `/readyz` says ready.

A fresh replica's first request otherwise pays for lazy imports (decoders, feature code), first allocations
and Triton's first runs of each part: ~3x a steady request on the reference box. The clip is made here (a
tone and a still canonical face, 3 s): no patient data, nothing written anywhere, no metrics counted.
"""

from __future__ import annotations

import io
from importlib.resources import files

import numpy as np

from avpenet import contract

SECONDS = 3.0


def synthetic_request():
    """A ScoreRequest with a WAV tone and a face-track `.npz` of a still canonical face."""
    import soundfile as sf

    from avpenet.features.track import FaceTrack
    from preprocess_service.protocol import MediaPart, ScoreRequest

    t = np.arange(int(SECONDS * contract.SAMPLE_RATE)) / contract.SAMPLE_RATE
    wav = io.BytesIO()
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    sf.write(wav, tone, contract.SAMPLE_RATE, format="WAV")
    frames = int(round(SECONDS * contract.FPS))
    canon = np.load(files("avpenet.features") / "canonical_face.npy").astype(np.float32)[:, :2]
    landmarks = np.zeros((frames, contract.N_LANDMARKS, 3), np.float32)
    landmarks[:, :, :2] = 0.5 + 0.15 * (canon - canon.mean(0)) / np.abs(canon).max()
    track = FaceTrack(
        landmarks=landmarks,
        blendshapes=np.full((frames, contract.N_BLENDSHAPES), 0.1, np.float32),
        face_present=np.ones(frames, np.bool_),
        head_pose=np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1)),
        image_size=np.array([640, 480], np.int32),
    )
    return ScoreRequest(
        audio=MediaPart(data=wav.getvalue(), filename="warmup.wav"),
        landmarks=MediaPart(data=track.to_npz_bytes(), filename="warmup.npz"),
        age_group=contract.AGE_GROUPS[0],
        request_id="warmup",
    )
