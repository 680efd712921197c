"""Small in-memory media for tests and demos: MP4/WebM/MKV with PyAV, WAV/FLAC/OGG with soundfile.

Nothing here touches disk: tests of the decoders, the gateway and the bad-input corpus build their clips
with these helpers so every case is reproducible and needs no bundled binaries.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np
import soundfile as sf

from avpenet import contract


def tone(seconds: float, sr: int, *, freq: float = 440.0, amp: float = 0.3, noise_dbfs: float = -50.0,
         seed: int = 0) -> np.ndarray:  # fmt: skip
    """A tone with a noise floor, float32 mono (a realistic test signal: no exactly silent bins)."""
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 10 ** (noise_dbfs / 20), t.size)
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def audio_bytes(wave: np.ndarray, sr: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    """WAV/FLAC/OGG bytes of a float waveform [S] or [S, C]."""
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def face_frames(image: np.ndarray, n: int, *, size: tuple[int, int] = (256, 256), shift_px: int = 4,
                seed: int = 0) -> list[np.ndarray]:  # fmt: skip
    """n RGB frames (width, height = size) cropped from image with a small random head motion."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    base = cv2.resize(image, (w + 4 * shift_px, h + 4 * shift_px), interpolation=cv2.INTER_AREA)
    frames = []
    for _ in range(n):
        dx, dy = rng.integers(0, 4 * shift_px + 1, 2)
        frames.append(np.ascontiguousarray(base[dy : dy + h, dx : dx + w]))
    return frames


def noise_frames(n: int, size: tuple[int, int] = (160, 120), seed: int = 0) -> list[np.ndarray]:
    """n RGB frames of random noise (a video with no face)."""
    rng = np.random.default_rng(seed)
    w, h = size
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def video_bytes(
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    audio: np.ndarray | None = None,
    sr: int = contract.SAMPLE_RATE,
    container: str = "mp4",
    video_codec: str | None = None,
    audio_codec: str | None = None,
    audio_start_s: float = 0.0,
    video_start_s: float = 0.0,
    audio_jump: tuple[float, float] | None = None,
) -> bytes:
    """Encode RGB frames (and optional mono float audio) into an in-memory container (mp4, webm, matroska).

    Timestamps as recorders write them: each track may start late (`audio_start_s`, `video_start_s`) and the
    audio's timestamps may jump by `audio_jump` = (at_s, by_s) after its first `at_s` seconds of samples
    (by_s > 0: a hole, packets dropped; < 0: an overlap)."""
    vcodec = video_codec or {"webm": "libvpx-vp9"}.get(container, "libx264")
    acodec = audio_codec or {"webm": "libopus"}.get(container, "aac")
    frames = list(frames)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        rate = Fraction(fps).limit_denominator(1000)
        vs = out.add_stream(vcodec, rate=rate) if frames else None
        if vs is not None:
            vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
            vs.pix_fmt = "yuv420p"
        a_s = None
        if audio is not None:
            a_rate = 48_000 if acodec == "libopus" else sr
            a_s = out.add_stream(acodec, rate=a_rate)
            a_s.layout = "mono"
        v_first = int(round(video_start_s * float(rate)))
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if v_first:  # else the encoder numbers the frames, as it always has
                frame.pts = v_first + i
            for packet in vs.encode(frame):
                out.mux(packet)
        if vs is not None:
            out.mux(vs.encode(None))
        if a_s is not None:
            wave = np.asarray(audio, np.float32)
            if a_s.rate != sr:
                from scipy.signal import resample_poly

                wave = resample_poly(wave, a_s.rate, sr).astype(np.float32)
            chunk = 1024
            for start in range(0, wave.size, chunk):
                piece = wave[start : start + chunk][None, :]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout="mono")
                frame.sample_rate = a_s.rate
                frame.pts = start + int(round(audio_start_s * a_s.rate))
                if audio_jump is not None and start >= audio_jump[0] * a_s.rate:
                    frame.pts += int(round(audio_jump[1] * a_s.rate))
                for packet in a_s.encode(frame):
                    out.mux(packet)
            out.mux(a_s.encode(None))
    return buf.getvalue()
