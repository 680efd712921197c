"""Hostile media built in memory for the feature tests and the bad-input corpus: SDP text behind a container's
magic bytes, MP4s with forged sample tables, WAVs with forged rates, refused video containers, degenerate
face tracks. Each was a denial of service or a score from no signal before the decoders refused it."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import soundfile as sf

SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=probe\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 46101 RTP/AVP 0\r\n"
)
SDP_PROBES = {
    "mp3_frame_header": b"\xff\xfb\n" + SDP,
    "ftyp_prefix": b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00isom" + SDP,
}
FORGED_SAMPLES = 30_000_000


def float_wav(x: np.ndarray, rate: int, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def overflowing_wav(rate: int = 48000) -> bytes:
    """3 s of finite float samples at ±3.4e38: resampling overflows them to Inf/NaN."""
    x = np.full(3 * rate, 3.4e38, np.float32)
    x[::2] *= -1
    return float_wav(x, rate)


def with_rate(data: bytes, rate: int) -> bytes:
    """A WAV whose fmt chunk declares `rate` (the byte rate is left as written)."""
    raw = bytearray(data)
    raw[24:28] = struct.pack("<I", rate)
    return bytes(raw)


def many_channel_ogg(channels: int = 255, seconds: float = 1.0, rate: int = 48000) -> bytes:
    """Ogg Vorbis of silence in `channels` channels: a few KB a second, decoded to channels x the samples."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * rate), channels), np.float32), rate, format="OGG")
    return buf.getvalue()


def _mp3(rate: int, seconds: float, layout: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp3") as out:
        stream = out.add_stream("mp3", rate=rate)
        stream.layout = layout
        t = np.arange(int(seconds * rate)) / rate
        mono = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
        planes = np.repeat(mono[None], 2 if layout == "stereo" else 1, axis=0)
        frame = av.AudioFrame.from_ndarray(planes.T.reshape(1, -1).copy(), format="flt", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    data = buf.getvalue()
    if data[:3] == b"ID3":  # the ID3v2 tag (syncsafe size) is dropped, as a joining tool would drop it
        data = data[10 + sum(b << (7 * (3 - i)) for i, b in enumerate(data[6:10])) :]
    return data


def joined_mp3(seconds: float = 2.0) -> bytes:
    """Two MP3s joined end to end: 44.1 kHz mono, then 48 kHz stereo (the rate and the layout change)."""
    return _mp3(44100, seconds, "mono") + _mp3(48000, seconds, "stereo")


def mp3_in_wav(keep: float = 0.5, seconds: float = 3.0, rate: int = 16000) -> bytes:
    """A WAV of MP3 data (format tag 0x55, as some recorders and converters write) cut after `keep` of its MP3
    bytes: libsndfile declares the whole length and decodes only the part that is there."""
    data = _mp3(rate, seconds, "mono")
    # MPEGLAYER3WAVEFORMAT: WAVEFORMATEX, then cbSize 12, wID 1, flags 2, block size, 1 frame a block, delay
    fmt = struct.pack("<HHIIHH", 0x55, 1, rate, 4000, 1, 0) + struct.pack("<HHIHHH", 12, 1, 2, 144, 1, 1393)
    fact = b"fact" + struct.pack("<II", 4, int(seconds * rate))
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + fact + b"data" + struct.pack("<I", len(data)) + data
    whole = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
    return whole[: len(whole) - len(data) + int(len(data) * keep)]


W64_RIFF = bytes.fromhex("726966662e91cf11a5d628db04c10000")  # Wave64's `riff` GUID, then `wave`'s
W64_GUID_TAIL = bytes.fromhex("f3acd3118cd100c04f8edb8a")  # its chunk GUIDs: a FourCC, then these 12 bytes


def as_w64(wav: bytes) -> bytes:
    """The chunks of a (whole) RIFF/WAVE in a Sony Wave64: GUID ids, 64-bit sizes counting the 24-byte
    chunk header, chunks aligned to 8 bytes."""
    body, at = b"", 12
    while at + 8 <= len(wav):
        size = struct.unpack("<I", wav[at + 4 : at + 8])[0]
        chunk = wav[at : at + 4] + W64_GUID_TAIL + struct.pack("<Q", 24 + size) + wav[at + 8 : at + 8 + size]
        body += chunk + bytes(-len(chunk) % 8)
        at += 8 + size + (size & 1)
    return W64_RIFF + struct.pack("<Q", 40 + len(body)) + b"wave" + W64_GUID_TAIL + body


def eight_channel_wav(tag: int = 0x4C55, seconds: float | None = None, rate: int = 48_000) -> bytes:
    """An 8-channel WAV (the most accepted) whose `fmt ` chunk names `tag`, a codec libsndfile lacks so FFmpeg
    reads it (0x4C55: mu-law to FFmpeg), at `rate`: 4 KB of random bytes (`seconds` None: the reviewer's
    probe, byte for byte) or a mu-law 440 Hz tone. FFmpeg decodes it to 8-channel frames, whose 9th plane
    PyAV's `to_ndarray` read: a segfault."""
    if seconds is None:
        payload = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    else:
        t = np.arange(int(seconds * rate)) / rate
        tone = np.repeat((0.3 * np.sin(2 * np.pi * 440.0 * t))[:, None], 8, axis=1)  # [samples, channels]
        buf = io.BytesIO()
        sf.write(buf, tone, rate, format="RAW", subtype="ULAW")
        payload = buf.getvalue()
    fmt = struct.pack("<HHIIHH", tag, 8, rate, 8 * rate if seconds else 0, 8, 8) + b"\0\0"
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def surround_mp4(layout: str = "7.1", seconds: float = 2.0, rate: int = 48_000) -> bytes:
    """An MP4 of one AAC track in `layout` (7.1: 8 channels, what a camera or an editor's export may carry),
    every channel the same 0.3 tone at 440 Hz."""
    from support import testmedia

    channels = len(av.AudioLayout(layout).channels)
    planes = np.repeat(testmedia.tone(seconds, rate, noise_dbfs=-90.0)[None], channels, axis=0)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = layout
        testmedia.encode_audio(out, stream, planes, layout, rate, sample_format="flt")
    return buf.getvalue()


def gsm_wav(seconds: float = 3.0, subtype: str = "GSM610") -> bytes:
    """An 8 kHz WAV of a 440 Hz tone in a telephony codec (GSM 6.10, G.721) libsndfile decodes but cannot seek
    in."""
    t = np.arange(int(seconds * 8000)) / 8000
    return float_wav((0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), 8000, subtype)


def vorbis_cut_in_first_audio_page(seconds: float = 3.0, rate: int = 16000) -> bytes:
    """Ogg Vorbis cut half-way into its first audio page (an upload cut off just after the headers):
    libsndfile opens it and reads 0 frames without an error; FFmpeg cannot open it."""
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), rate, format="OGG")
    data, at = buf.getvalue(), 0
    while True:  # Ogg pages: "OggS", version, flags, granule (8 bytes), serial, sequence, CRC, segment table
        assert data[at : at + 4] == b"OggS"
        segments = data[at + 26]
        size = 27 + segments + sum(data[at + 27 : at + 27 + segments])
        if int.from_bytes(data[at + 6 : at + 14], "little", signed=True) > 0:  # header pages have granule 0
            return data[: at + size // 2]
        at += size


def video(
    fmt: str,
    frames: int = 3,
    options: dict[str, str] | None = None,
    codec: str = "mpeg4",
    pix_fmt: str = "yuv420p",
) -> bytes:
    """A tiny video (MPEG-4 Part 2 unless `codec`) in container `fmt` (avi, mpegts, gif...) written with muxer
    `options`."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = pix_fmt
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        out.mux(stream.encode(None))
    return buf.getvalue()


def two_frame_mp4(options: dict[str, str] | None = None, frames: int = 2) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options=options or {}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for pts in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
        out.mux(stream.encode(None))
    return buf.getvalue()


def forge(raw: bytes, box: bytes, at: int, *values: int) -> bytes:
    """Overwrite big-endian u32 fields of the first `box`, `at` bytes after its type."""
    data = bytearray(raw)
    start = data.find(box)
    assert start > 4, f"{box!r} not found"
    for i, value in enumerate(values):
        data[start + at + 4 * i : start + at + 4 * i + 4] = struct.pack(">I", value)
    return bytes(data)


def huge_timescale(raw: bytes) -> bytes:
    """mdhd timescale 2e9: 3e7 one-tick samples then claim 15 ms, so no duration check sees them."""
    return forge(raw, b"mdhd", 16, 2_000_000_000)


def sample_table_bomb() -> bytes:
    """The 1.5 KB MP4 whose stsz + stsc claim 3e7 one-byte samples (FFmpeg: 1.7 GB and 22 s to open)."""
    raw = forge(two_frame_mp4(), b"stsz", 8, 1, FORGED_SAMPLES)
    return huge_timescale(forge(raw, b"stsc", 16, FORGED_SAMPLES))


def sample_count_bomb() -> bytes:
    """An MP4 whose stts is one run of 3e7 samples: more than the duration limit allows at 240 fps."""
    return huge_timescale(forge(two_frame_mp4(), b"stts", 8, 1, FORGED_SAMPLES, 1))


def many_tracks_mp4(copies: int) -> bytes:
    """The 2-frame MP4 with its video `trak` repeated: 990 copies took FFmpeg 7.7 s and 840 MB to open."""
    raw = two_frame_mp4()
    moov = raw.find(b"moov") - 4
    moov_size = struct.unpack(">I", raw[moov : moov + 4])[0]
    trak = raw.find(b"trak", moov) - 4
    box = raw[trak : trak + struct.unpack(">I", raw[trak : trak + 4])[0]]
    body = raw[moov + 4 : moov + moov_size] + box * copies
    return raw[:moov] + struct.pack(">I", len(body) + 4) + body + raw[moov + moov_size :]


def edit_list_bomb(frames: int = 40, edits: int = 100_000) -> bytes:
    """An MP4 whose video track has `edits` edit-list entries, each replaying the clip: FFmpeg rebuilds the
    index per entry (400 frames x 100k edits in 1.2 MB took 14.5 s and 1.45 GB)."""
    raw = two_frame_mp4(frames=frames)
    entries = struct.pack(">Iii", 1000, 0, 0x00010000) * edits  # v0: duration, media time, rate 1.0
    elst = struct.pack(">I4sII", 16 + len(entries), b"elst", 0, edits) + entries
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    trak_at = raw.find(b"trak") - 4
    trak = raw[trak_at : trak_at + struct.unpack(">I", raw[trak_at : trak_at + 4])[0]]
    old = trak.find(b"edts") - 4
    old_size = struct.unpack(">I", trak[old : old + 4])[0]
    body = trak[4:old] + edts + trak[old + old_size :]
    new_trak = struct.pack(">I", len(body) + 4) + body
    moov_at = raw.find(b"moov") - 4
    moov = raw[moov_at : moov_at + struct.unpack(">I", raw[moov_at : moov_at + 4])[0]].replace(trak, new_trak)
    moov = struct.pack(">I", len(moov)) + moov[4:]
    return raw[:moov_at] + moov + raw[moov_at + len(moov) - len(new_trak) + len(trak) :]


def degenerate_landmarks(track, value: float | None = None):
    """`track` with face_present all true and every landmark `value`, or (None) its first frame frozen."""
    arrays = track.arrays()
    arrays["face_present"] = np.ones_like(arrays["face_present"])
    if value is None:
        arrays["landmarks"] = np.repeat(arrays["landmarks"][:1], len(arrays["landmarks"]), axis=0)
    else:
        arrays["landmarks"] = np.full_like(arrays["landmarks"], value)
    return type(track)(**arrays)


def timestamp_jump_mkv(jump_s: float = 590.0, rate: int = 192_000) -> bytes:
    """Two 0.1-s PCM frames of a 192-kHz Matroska track, the second stamped `jump_s` later: a few KB whose
    timestamps span ten minutes (filling that hole with silence took 1.4 GB)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        for at_s in (0.0, jump_s):
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate // 10) / rate)
            frame = av.AudioFrame.from_ndarray(
                (tone * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, int(at_s * rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
