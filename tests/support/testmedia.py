"""Small in-memory media for tests and demos: MP4/WebM/MKV/AMR with PyAV, WAV/FLAC/OGG with soundfile.

Nothing here touches disk: tests of the decoders, the gateway and the bad-input corpus build their clips
with these helpers so every case is reproducible and needs no bundled binaries.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np
import soundfile as sf

from avpenet import contract
from avpenet.synth.render import h264_options


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
    sample_aspect: Fraction | None = None,
) -> bytes:
    """Encode RGB frames (and optional mono float audio) into an in-memory container (mp4, webm, matroska).

    Timestamps as recorders write them: each track may start late (`audio_start_s`, `video_start_s`) and the
    audio's timestamps may jump by `audio_jump` = (at_s, by_s) after its first `at_s` seconds of samples
    (by_s > 0: a hole, packets dropped; < 0: an overlap). `sample_aspect`: the width:height of a pixel the
    video declares (an anamorphic recording; the frames as given are the coded ones)."""
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
            if sample_aspect is not None:
                vs.codec_context.sample_aspect_ratio = sample_aspect
            if vcodec == "libx264":  # the same bytes for the same frames on any CPU (h264_options says why)
                vs.options = h264_options()
            else:
                vs.codec_context.thread_count = 1
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


def adts_bytes(wave: np.ndarray, sr: int, *, id3: bool = False) -> bytes:
    """A raw ADTS AAC file (.aac, as Android and many recorders write), optionally behind an ID3v2 tag."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="adts", options={"write_id3v2": "1"} if id3 else {}) as out:
        stream = out.add_stream("aac", rate=sr)
        stream.layout = "mono"
        encode_audio(out, stream, np.asarray(wave, np.float32)[None, :], "mono", sr)
    return buf.getvalue()


def mp3_bytes(
    wave: np.ndarray, sr: int, *, vbr_quality: int | None = None, xing: bool = True, id3: bool = True
) -> bytes:
    """A mono MP3 (libmp3lame): constant 64 kbit/s, or variable at LAME's `vbr_quality` (0 best - 9); `xing`
    False leaves out the Xing/Info header that tells players a VBR file's length (streaming recorders), `id3`
    False the ID3v2 tag FFmpeg writes first (frames alone, as a WAV of MP3 data holds them)."""
    options = {} if xing else {"write_xing": "0"}
    if not id3:
        options["id3v2_version"] = "0"
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp3", options=options) as out:
        stream = out.add_stream("libmp3lame", rate=sr)
        stream.layout = "mono"
        _set_bit_rate(stream, 64_000, vbr_quality)
        encode_audio(out, stream, np.asarray(wave, np.float32)[None, :], "mono", sr, 1152)
    return buf.getvalue()


def riff_bytes(
    codec: str, wave: np.ndarray, sr: int, *, container: str = "wav", bit_rate: int | None = None,
    vbr_quality: int | None = None,
) -> bytes:  # fmt: skip
    """A mono WAV (`container` "w64": a Sony Wave64) of FFmpeg's `codec` encoder written by FFmpeg's muxer,
    which names the codec by its format tag (WMA 0x0161, G.722 0x028F, raw AAC frames 0x00FF, MP3 0x0055);
    `vbr_quality` as in `mp3_bytes`."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = "mono"
        _set_bit_rate(stream, bit_rate, vbr_quality)
        chunk = 1152 if "mp3" in codec else 1024
        encode_audio(out, stream, np.asarray(wave, np.float32)[None, :], "mono", sr, chunk)
    return buf.getvalue()


def wav_of(tag: int, payload: bytes, sr: int, *, byte_rate: int = 0) -> bytes:
    """A mono RIFF/WAVE whose `fmt ` chunk (a WAVEFORMATEX without extra bytes) names format tag `tag` and
    whose `data` chunk holds `payload`: coded frames (ADTS AAC...) in a WAV, as some converters write them."""
    fmt = struct.pack("<HHIIHHH", tag, 1, sr, byte_rate, 1, 0, 0)
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return (
        b"RIFF"
        + struct.pack("<I", 4 + len(body) + len(payload) % 2)
        + b"WAVE"
        + body
        + bytes(len(payload) % 2)
    )


def _set_bit_rate(stream, bit_rate: int | None, vbr_quality: int | None) -> None:
    """A constant `bit_rate` (None: the encoder's default), or LAME's variable `vbr_quality` (0 best - 9)."""
    if vbr_quality is not None:
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = vbr_quality * 118  # FF_QP2LAMBDA
    elif bit_rate is not None:
        stream.bit_rate = bit_rate


def amr_nb_bytes(wave: np.ndarray, sr: int = 8000) -> bytes:
    """An AMR-NB file (.amr, "#!AMR\\n" then 20-ms frames: what Android voice recorders write) of a float
    mono wave at 8 kHz, encoded at 12.2 kbit/s by FFmpeg's libopencore_amrnb."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="amr") as out:
        stream = out.add_stream("libopencore_amrnb", rate=sr)
        stream.layout, stream.bit_rate = "mono", 12_200
        encode_audio(out, stream, np.asarray(wave, np.float32)[None, :], "mono", sr, 160, "s16")
    return buf.getvalue()


def amr_wb_bytes(frames: int, seed: int = 0) -> bytes:
    """An AMR-WB file ("#!AMR-WB\\n", 16 kHz) of `frames` 20-ms speech frames at 23.85 kbit/s with random
    payload bits (FFmpeg has no AMR-WB encoder; any bits decode): one header byte (frame type 8, quality
    bit) and 60 bytes each."""
    rng = np.random.default_rng(seed)
    return b"#!AMR-WB\n" + b"".join(bytes([8 << 3 | 4]) + rng.bytes(60) for _ in range(frames))


def caf_bytes(codec: str, wave: np.ndarray, sr: int) -> bytes:
    """A mono CAF written by FFmpeg, of codecs libsndfile cannot read: IMA4 ("adpcm_ima_qt", as iOS
    recorders write) or ALAC (its packet table after the audio)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="caf") as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = "mono"
        encode_audio(out, stream, np.asarray(wave, np.float32)[None, :], "mono", sr)
    return buf.getvalue()


def piped_flac_bytes(wave: np.ndarray, sr: int) -> bytes:
    """A mono FLAC as FFmpeg writes it to a pipe (a streaming encoder, `ffmpeg ... -f flac -`): it cannot
    seek back to STREAMINFO when done, so the total samples there stay 0 (unknown)."""

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def write(self, b) -> int:
            self.data += b
            return len(b)

    pipe = Pipe()
    with av.open(pipe, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=sr)
        stream.layout = "mono"
        encode_audio(out, stream, np.asarray(wave, np.float32)[None, :], "mono", sr)
    return bytes(pipe.data)


def encode_audio(
    out, stream, planes: np.ndarray, layout: str, sr: int, chunk: int = 1024, sample_format: str = "fltp"
) -> None:
    """Encode float `planes` [channels, samples] into `stream` of the open container `out`, frame by frame
    (timestamps from 0), and flush it. `sample_format` "s16": as 16-bit integers (what AMR encoders take);
    a packed one ("s16", "flt") is handed over interleaved (PyAV cannot fill 8 planar channels: 7.1)."""
    if sample_format == "s16":
        planes = (np.clip(np.asarray(planes, np.float32), -1, 1) * 32767).astype(np.int16)
    for start in range(0, planes.shape[1], chunk):
        piece = np.ascontiguousarray(planes[:, start : start + chunk], planes.dtype)
        if not av.AudioFormat(sample_format).is_planar:
            piece = piece.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(piece, format=sample_format, layout=layout)
        frame.sample_rate, frame.pts = sr, start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def top_level_boxes(data: bytes) -> list[bytes]:
    """The types of an MP4/MOV's top-level boxes, in order (32-bit sizes, as these test files have)."""
    return [data[pos + 4 : pos + 8] for pos in _box_starts(data)]


def _box_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    while pos + 8 <= len(data):
        starts.append(pos)
        pos += int.from_bytes(data[pos : pos + 4], "big")
    return starts


def rearranged(data: bytes, order: list[bytes]) -> bytes:
    """An MP4/MOV made of its top-level boxes `order` (each type once, others dropped) with the chunk offsets
    (`stco`) moved with the data: e.g. [wide, mdat, moov] as QuickTime files written before `ftyp` existed,
    [moov, mdat] as a fast-start file without `ftyp`."""
    assert b"co64" not in data
    old = {data[p + 4 : p + 8]: (p, int.from_bytes(data[p : p + 4], "big")) for p in _box_starts(data)}
    new, out = {}, bytearray()
    for kind in order:
        new[kind] = len(out)
        out += data[old[kind][0] : old[kind][0] + old[kind][1]]
    at = out.find(b"stco")
    while at >= 0:
        count = int.from_bytes(out[at + 8 : at + 12], "big")
        for entry in range(at + 12, at + 12 + 4 * count, 4):
            offset = int.from_bytes(out[entry : entry + 4], "big")
            kind = next(k for k, (p, n) in old.items() if p <= offset < p + n)
            out[entry : entry + 4] = (offset - old[kind][0] + new[kind]).to_bytes(4, "big")
        at = out.find(b"stco", at + 12 + 4 * count)
    return bytes(out)


def ftyp_as(data: bytes, kind: bytes) -> bytes:
    """An MP4/MOV whose leading `ftyp` box is overwritten by a `free`/`skip` box of the same size (a header
    rewritten in place), so every offset stays right."""
    assert data[4:8] == b"ftyp"
    return (
        data[:4] + kind + bytes(int.from_bytes(data[:4], "big") - 8) + data[int.from_bytes(data[:4], "big") :]
    )


def turned_clockwise(data: bytes) -> bytes:
    """An MP4 whose (one) track header asks players to show it turned 90 degrees clockwise, as a phone held
    upright writes it: the `tkhd` display matrix rewritten in place (16.16 fixed point, w in 2.30)."""
    at = data.index(b"tkhd")
    matrix = at + 4 + 4 + (20 if data[at + 4] == 0 else 32) + 16  # after version, flags, times, duration...
    one, w = 1 << 16, 1 << 30
    return data[:matrix] + struct.pack(">9i", 0, one, 0, -one, 0, 0, 0, 0, w) + data[matrix + 36 :]
