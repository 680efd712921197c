"""Synthetic clips for load: a cry-like WAV, a face-track .npz from the real tracker, and H.264/AAC MP4s.

Built fresh per run from code (no patient media, nothing downloaded): the face comes from the public-domain
astronaut photo, swaying slightly per frame, tracked by the real FaceLandmarker.
A `mix` is the share of each request kind; the locustfile draws requests from it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from avpenet import contract
from avpenet.features.audio import window_count

VIDEO_FPS = 25  # camera rate; the gateway samples contract.FPS from it
FRAME_SIZE = 320  # square frames: a bedside camera crop around the face


@dataclass(frozen=True)
class ClipKind:
    """One request shape: which multipart fields (= gRPC MediaFile fields) and how many seconds."""

    name: str
    fields: tuple[str, ...]  # subset of clip, audio, landmarks
    seconds: float

    @property
    def has_video(self) -> bool:
        """An MP4 `clip` part: the gateway's video path (preprocess_service.service.has_video)."""
        return "clip" in self.fields

    @property
    def windows(self) -> int:
        """Windows the gateway cuts from the clip's audio."""
        return window_count(int(self.seconds * contract.SAMPLE_RATE))


KINDS: dict[str, ClipKind] = {
    k.name: k
    for k in (
        ClipKind("av_3s", ("clip",), 3.0),  # a bedside MP4: the full video path (decode + face tracking)
        ClipKind("av_10s", ("clip",), 10.0),  # a longer clip: 8 windows share one decode
        ClipKind("audio_3s", ("audio",), 3.0),  # audio only (face not visible): visual modality masked
        ClipKind("audio_30s", ("audio",), 30.0),  # long audio: 28 windows in one Triton call
        ClipKind("landmarks_3s", ("audio", "landmarks"), 3.0),  # privacy mode: the model-bound path
        ClipKind("landmarks_60s", ("audio", "landmarks"), 60.0),  # the bedside minute: 58 windows, one call
    )
}

# Content-Type of each clip file as the load generators upload it.
CONTENT_TYPES = {".mp4": "video/mp4", ".wav": "audio/wav", ".npz": "application/octet-stream"}

# Request mixes (shares sum to 1). `ward` is what a monitored ward sends; the others are the benchmark's.
MIXES: dict[str, dict[str, float]] = {
    "ward": {"av_3s": 0.5, "audio_3s": 0.2, "landmarks_3s": 0.15, "av_10s": 0.1, "audio_30s": 0.05},
    "model": {"landmarks_3s": 1.0},
    "long": {"landmarks_60s": 1.0},
    "video": {"av_3s": 1.0},
}


def cry_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Float32 mono at SAMPLE_RATE: cry bursts (harmonic f0 ~450 Hz with vibrato) over ward noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * contract.SAMPLE_RATE)
    t = np.arange(n) / contract.SAMPLE_RATE
    f0 = 450 + 60 * np.sin(2 * np.pi * 5.5 * t) + 40 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / contract.SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    bursts = (np.sin(2 * np.pi * 0.6 * t + rng.uniform(0, 6)) > -0.2).astype(float)
    envelope = np.convolve(bursts, np.ones(800) / 800, mode="same")
    wave = 0.3 * voice * envelope + 0.01 * rng.standard_normal(n)
    return (wave / np.max(np.abs(wave)) * 0.8).astype(np.float32)


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, cry_audio(seconds, seed), contract.SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def face_frames(seconds: float, fps: int = VIDEO_FPS) -> np.ndarray:
    """[N, FRAME_SIZE, FRAME_SIZE, 3] uint8 RGB: the astronaut's face with a slow head sway."""
    import cv2
    from skimage import data

    face = data.astronaut()[0:300, 120:360]  # the face and shoulders, public domain
    canvas = cv2.resize(face, (FRAME_SIZE, FRAME_SIZE * face.shape[0] // face.shape[1]))
    canvas = cv2.resize(canvas, (FRAME_SIZE, FRAME_SIZE))
    n = int(round(seconds * fps))
    frames = np.empty((n, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for i in range(n):
        angle = 4.0 * np.sin(2 * np.pi * i / (fps * 2.5))
        shift = 6.0 * np.sin(2 * np.pi * i / (fps * 3.1))
        m = cv2.getRotationMatrix2D((FRAME_SIZE / 2, FRAME_SIZE / 2), angle, 1.0)
        m[0, 2] += shift
        frames[i] = cv2.warpAffine(canvas, m, (FRAME_SIZE, FRAME_SIZE), borderMode=cv2.BORDER_REFLECT)
    return frames


def mp4_bytes(seconds: float, seed: int = 0) -> bytes:
    """An H.264 + AAC MP4 (what a bedside camera uploads), encoded in memory with PyAV."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.width = video.height = FRAME_SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=contract.SAMPLE_RATE)
        audio.layout = "mono"
        for rgb in face_frames(seconds):
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = cry_audio(seconds, seed)
        step = 1024
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
            frame.sample_rate = contract.SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, contract.SAMPLE_RATE)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return buf.getvalue()


def landmarks_npz(seconds: float) -> bytes:
    """A face-track .npz (privacy mode) from the real tracker run on the same face frames at contract.FPS."""
    from avpenet.features.tracker import FaceTracker

    frames = face_frames(seconds, fps=contract.FPS)
    with FaceTracker() as tracker:
        track = tracker.track_frames(frames)
    if not track.face_present.all():
        raise RuntimeError("the tracker lost the synthetic face; the load-test clip would be invalid")
    return track.to_npz_bytes()


def build(out: Path, kinds: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Write each kind's files under `out` and a manifest {kind: {field: filename}}; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = {}
    for name in kinds or list(KINDS):
        kind = KINDS[name]
        files: dict[str, str] = {}
        for field in kind.fields:
            if field == "clip":
                payload, filename = mp4_bytes(kind.seconds), f"{name}.mp4"
            elif field == "audio":
                payload, filename = wav_bytes(kind.seconds), f"{name}.wav"
            else:
                payload, filename = landmarks_npz(kind.seconds), f"{name}.npz"
            (out / filename).write_bytes(payload)
            files[field] = filename
        manifest[name] = files
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def kinds_of(mixes: list[str]) -> list[str]:
    return sorted({k for m in mixes for k in MIXES[m]})
