"""Large uploads for the gateway's memory probe (`loadtests.gateway_upload_memory`), written to disk.

Each file is dense so that a large upload stays within the gateway's default 60-s duration limit and its
decoded wave stays small beside it (the probe measures what the gateway holds of the upload, not the wave):
a WAV of 8 channels at 192 kHz, 32-bit (6.1 MB/s); a FLAC of 8 channels at 192 kHz, 24-bit white noise
(which FLAC cannot compress); an MP4 (H.264 lossless noise at 480x480, 25 fps, and a mono AAC tone) whose
picture has no face, so its sound is scored. Files are written block by block: the writer never holds one.
`--rate`, `--channels` and `--bits` (`add_sound_options`) make a WAV or FLAC of another format, such as a
hospital's 48 kHz stereo 16-bit WAV, whose decoded wave is large beside the file (the decode's own memory).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_int

KINDS = {"wav": ("audio", "audio/wav"), "flac": ("audio", "audio/flac"), "mp4": ("clip", "video/mp4")}
SOUND = {"wav": ("WAV", 32), "flac": ("FLAC", 24)}  # format, default bits per sample
RATE, CHANNELS = 192_000, 8
VIDEO_SIZE, VIDEO_FPS = 480, 25
BOUNDARY = b"gateway-upload-memory"
CONTENT_TYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()


def add_sound_options(parser: argparse.ArgumentParser) -> None:
    """The WAV's or FLAC's format, as `write_media` takes it (an MP4's sound is a fixed mono AAC tone)."""
    parser.add_argument("--rate", type=positive_int, default=RATE, help="WAV/FLAC sample rate, Hz")
    parser.add_argument("--channels", type=positive_int, default=CHANNELS, help="WAV/FLAC channels")
    parser.add_argument("--bits", type=int, choices=(16, 24, 32), help="WAV/FLAC bits (default: 32, FLAC 24)")


def sound_format(kind: str, rate: int = RATE, channels: int = CHANNELS, bits: int | None = None) -> str:
    """What `write_media` writes for these options, in words and brackets ("" for an MP4)."""
    if kind not in SOUND:
        return ""
    return f" ({rate} Hz, {channels} channel(s), {bits or SOUND[kind][1]}-bit)"


def write_media(
    path: Path,
    kind: str,
    size: int,
    seed: int = 0,
    *,
    rate: int = RATE,
    channels: int = CHANNELS,
    bits: int | None = None,
) -> None:
    """A `kind` file at `path` of about `size` bytes (a FLAC's size is what its noise compresses to); a WAV
    or FLAC at `rate` with `channels` of `bits` (None: 32 for a WAV, 24 for a FLAC)."""
    rng = np.random.default_rng(seed)
    if kind == "mp4":
        _write_mp4(path, size, rng)
        return
    import soundfile as sf

    fmt, default_bits = SOUND[kind]
    bits = bits or default_bits
    frames = max(size // (channels * bits // 8), rate // 10)
    with sf.SoundFile(path, "w", rate, channels, f"PCM_{bits}", format=fmt) as f:
        for start in range(0, frames, rate):
            block = rng.uniform(-0.5, 0.5, (min(rate, frames - start), channels)).astype(np.float32)
            f.write(block)


def _noise_frames(rng: np.random.Generator) -> Iterator[np.ndarray]:
    while True:
        yield rng.integers(0, 256, (VIDEO_SIZE, VIDEO_SIZE, 3), np.uint8)


def _write_mp4(path: Path, size: int, rng: np.random.Generator) -> None:
    """H.264 frames until the file holds `size` bytes (at least 5 frames), with their length of sound muxed
    along (the muxer holds video packets back until sound of the same time comes, so the file grows)."""
    import av

    rate = contract.SAMPLE_RATE
    with path.open("wb") as out, av.open(out, mode="w", format="mp4") as container:
        video = container.add_stream(
            "libx264", rate=VIDEO_FPS, options={"qp": "0", "preset": "ultrafast", "tune": "zerolatency"}
        )
        video.width = video.height = VIDEO_SIZE
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=rate)
        sound.layout = "mono"
        sent = 0
        for frames, rgb in enumerate(_noise_frames(rng), 1):
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
            done = frames >= 5 and out.tell() >= size
            until = frames * rate // VIDEO_FPS
            while sent + (0 if done else 1024) < until:  # whole AAC frames up to the picture's time
                container.mux(sound.encode(_tone(sent, min(1024, until - sent), rate)))
                sent += min(1024, until - sent)
            if done:
                break
        for stream in (video, sound):
            container.mux(stream.encode())


def _tone(start: int, n: int, rate: int):
    """`n` samples of a 440-Hz tone from sample `start`, as a PyAV frame."""
    import av

    t = np.arange(start, start + n) / rate
    frame = av.AudioFrame.from_ndarray(
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], "flt", "mono"
    )
    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
    return frame


def write_request(media: Path, kind: str, protocol: str, out: Path) -> None:
    """What the gateway receives for `media`, block by block: the multipart body (HTTP), or the serialized
    `avpenet.v1.ScoreRequest` (gRPC: the bytes Ray's proxy hands the gateway)."""
    part, ctype = KINDS[kind]
    name = f"upload.{kind}"
    if protocol == "grpc":
        from avpenet.v1 import scoring_pb2

        f = scoring_pb2.MediaFile(data=media.read_bytes(), filename=name, content_type=ctype)
        msg = scoring_pb2.ScoreRequest(age_group="neonate", **{part: f})
        out.write_bytes(msg.SerializeToString())
        return
    head = b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: %s\r\n\r\n'
    tail = b'\r\n--%s\r\nContent-Disposition: form-data; name="age_group"\r\n\r\nneonate\r\n--%s--\r\n'
    with out.open("wb") as f, media.open("rb") as src:
        f.write(head % (BOUNDARY, part.encode(), name.encode(), ctype.encode()))
        while block := src.read(1 << 20):
            f.write(block)
        f.write(tail % (BOUNDARY, BOUNDARY))
