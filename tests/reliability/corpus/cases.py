"""The cases: what each upload is, how it is made (in memory, seeded), and what the gateway must answer.

Every case is sized against the gateway's `Limits`, so "too long" and "too big" stay beyond the limits
whatever a deployment configures. Media carries `MARKER` (in file names, in chunks the decoders skip, in
random payloads) and the valid requests carry `SUBJECT_MARKER`, so the log checks can prove that neither
media bytes nor patient references reach a log.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from avpenet import contract

MARKER = b"AVPE-CANARY-5f3c1e9a"  # planted in media and file names; must never appear in any log
SUBJECT_MARKER = "Patient/canary-7e21"  # a subject reference of successful requests; never logged
PHI_TEXT = "Jane Canarydoe 1990-01-01"  # free text where a reference belongs (refused, never logged)
OK = (200, "OK")


@dataclass(frozen=True)
class Upload:
    """One request. `files` and `fields` are sent over both protocols; the overrides replace a whole body."""

    files: tuple[tuple[str, str, bytes], ...] = ()  # (part name, file name, bytes)
    fields: tuple[tuple[str, bytes], ...] = ()  # text fields as raw bytes (so non-UTF-8 can be sent)
    http_body: bytes | None = None  # replaces the multipart body ...
    http_content_type: str | None = None  # ... and its Content-Type
    grpc_raw: bytes | None = None  # replaces the protobuf message (malformed messages)


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    http_status: int
    grpc_code: str  # grpc.StatusCode member name
    make: Callable[[], Upload]

    @functools.cached_property
    def upload(self) -> Upload:
        return self.make()


# --- media makers (all in memory, deterministic) ------------------------------------------------------------
def _named(ext: str) -> str:
    return f"bed12-{MARKER.decode()}.{ext}"


def _wav(wave: np.ndarray, sr: int = contract.SAMPLE_RATE, subtype: str | None = None) -> bytes:
    """WAV bytes with a trailing `junk` chunk holding MARKER (decoders skip unknown chunks)."""
    from support import testmedia

    raw = testmedia.audio_bytes(wave, sr, subtype=subtype)
    junk = b"junk" + struct.pack("<I", len(MARKER)) + MARKER
    riff_size = struct.unpack("<I", raw[4:8])[0] + len(junk)
    return raw[:4] + struct.pack("<I", riff_size) + raw[8:] + junk


@functools.cache
def _tone_wav(seconds: float = 4.0) -> bytes:
    from support import testmedia

    return _wav(testmedia.tone(seconds, contract.SAMPLE_RATE, freq=450.0))


def _track(seconds: float = 4.0):
    from support.gateway import face_track

    return face_track(seconds, seed=3)


@functools.cache
def _npz() -> bytes:
    return _track().to_npz_bytes()


def _npz_with(**replace: np.ndarray) -> bytes:
    arrays = _track().arrays()
    arrays.update(replace)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: v for k, v in arrays.items() if v is not None})
    return buf.getvalue()


def _video(frames: list[np.ndarray], fps: float = 10, *, audio: bool = False, **kw) -> bytes:
    from support import testmedia

    seconds = len(frames) / fps
    wave = testmedia.tone(seconds, contract.SAMPLE_RATE, freq=300.0) if audio else None
    return testmedia.video_bytes(frames, fps, audio=wave, **kw)


@functools.cache
def _mp4_with_sound() -> bytes:
    from support import testmedia

    return _video(testmedia.noise_frames(30, size=(96, 64)), audio=True)


def _two_faces() -> bytes:
    from skimage import data
    from support import testmedia

    face = data.astronaut()[20:260, 120:360]  # 240 x 240 around the face
    pair = np.ascontiguousarray(np.concatenate([face, face[:, ::-1]], axis=1))  # two faces side by side
    return _video(testmedia.face_frames(pair, 30, size=(320, 160)))


def _long_gap_mp4(seconds: float) -> bytes:
    """Two tiny frames, the second `seconds` later: a few KB that claims a very long video."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for pts in (0, int(seconds * 1000)):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
        out.mux(stream.encode(None))
    return buf.getvalue()


def _bomb_mp4(limits) -> bytes:
    """Black frames just over the pixel limit: a few KB on the wire, hundreds of MB once decoded."""
    side = int(np.sqrt(limits.max_pixels)) + 64
    side += side % 2
    frames = [np.zeros((side, side, 3), np.uint8)] * 10
    return _video(frames, 10)


def _claims_16k_frames() -> bytes:
    """A Motion-JPEG Matroska whose container and JPEG headers claim 16384 x 16384 frames (~100 kB)."""
    import av
    from support import testmedia

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuvj420p"
        for rgb in testmedia.noise_frames(3, size=(256, 256)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
            for packet in stream.encode(frame):
                out.mux(packet)
        out.mux(stream.encode(None))
    raw = bytearray(buf.getvalue())
    side = (16384).to_bytes(2, "big")
    for element_id in (0xB0, 0xBA):  # Matroska PixelWidth / PixelHeight, 2-byte value 256
        at = raw.find(bytes([element_id, 0x82, 0x01, 0x00]))
        assert at > 0, "EBML pixel size element not found"
        raw[at + 2 : at + 4] = side
    at = raw.find(b"\xff\xc0")
    while at >= 0:  # every JPEG SOF0: length(2) precision(1) height(2) width(2)
        raw[at + 5 : at + 9] = side + side
        at = raw.find(b"\xff\xc0", at + 2)
    return bytes(raw)


def _unknown_codec_mkv() -> bytes:
    """A Matroska video whose CodecID names no codec FFmpeg knows (same length, so sizes stay valid)."""
    from support import testmedia

    raw = _video(testmedia.noise_frames(5, size=(64, 64)), container="matroska")
    assert b"V_MPEG4/ISO/AVC" in raw
    return raw.replace(b"V_MPEG4/ISO/AVC", b"V_AVPE/BOGUS/XX")


def _tiny_frames() -> bytes:
    frames = [np.full((2, 2, 3), 128, np.uint8)] * 30  # the smallest 4:2:0 picture: far below a face
    return _video(frames, 10)


def _silent_long_flac(seconds: float) -> bytes:
    """Digital silence compresses to almost nothing: a small FLAC that lasts `seconds`."""
    from support import testmedia

    return testmedia.audio_bytes(np.zeros(int(seconds * 8000), np.float32), 8000, fmt="FLAC")


def _sun_au() -> bytes:
    """Sun/NeXT AU (`.snd`): an audio container the service does not decode (AIFF, once this case's
    example, is decoded since libsndfile reads it)."""
    from support import testmedia

    return testmedia.audio_bytes(testmedia.tone(2.0, 16000), 16000, fmt="AU")


def _npz_frame_bomb(frames: int) -> bytes:
    """A valid-looking track with more frames than the limit (zeros: a tiny file)."""
    t = frames
    return _npz_with(
        landmarks=np.zeros((t, contract.N_LANDMARKS, 3), np.float32),
        blendshapes=np.zeros((t, contract.N_BLENDSHAPES), np.float32),
        face_present=np.ones(t, np.bool_),
        head_pose=np.tile(np.eye(4, dtype=np.float32), (t, 1, 1)),
    )


def _npz_zip_bomb() -> bytes:
    """An npz whose landmarks member inflates to ~115 MB of zeros from ~115 KB (header: wrong shape)."""
    shape = (200, contract.N_LANDMARKS, 300)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = header.getvalue()
    body, crc = bytearray(comp.compress(head)), zlib.crc32(head)
    chunk = bytes(1 << 22)
    left = int(np.prod(shape)) * 4
    while left > 0:
        piece = chunk[: min(left, len(chunk))]
        body += comp.compress(piece)
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    body += comp.flush()
    valid = zipfile.ZipFile(io.BytesIO(_npz()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in valid.infolist():
            if info.filename != "landmarks.npy":
                zf.writestr(info, valid.read(info))
    # The bomb member is appended by hand: zipfile would have to hold the inflated bytes to write it.
    return _append_raw_member(
        out.getvalue(), "landmarks.npy", bytes(body), len(head) + int(np.prod(shape)) * 4, crc
    )


def _append_raw_member(archive: bytes, name: str, deflated: bytes, size: int, crc: int) -> bytes:
    """Rebuild `archive` with one more member whose deflate stream is given (no recompression)."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            zf.writestr(info, src.read(info))
    data = bytearray(out.getvalue())
    eocd = data.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", data[eocd + 12 : eocd + 20])
    entries = struct.unpack("<H", data[eocd + 10 : eocd + 12])[0]
    central = bytes(data[cd_offset : cd_offset + cd_size])
    fname = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(deflated), size, len(fname), 0)
    offset = cd_offset
    entry = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(deflated), size, len(fname), 0, 0, 0,
        0, 0, offset,
    )  # fmt: skip
    new_cd = central + entry + fname
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries + 1, entries + 1, len(new_cd),
                      offset + len(local) + len(fname) + len(deflated), 0)  # fmt: skip
    return bytes(data[:cd_offset]) + local + fname + deflated + new_cd + end


def _pickled_npz() -> bytes:
    buf = io.BytesIO()
    arrays = _track().arrays()
    arrays["landmarks"] = np.array([{"x": 1}] * 3, dtype=object)
    np.savez(buf, **arrays)
    return buf.getvalue()


def _nan_wav() -> bytes:
    from support import testmedia

    wave = testmedia.tone(3.0, contract.SAMPLE_RATE)
    wave[1000:1100] = np.nan
    return _wav(wave, subtype="FLOAT")


def _clipped_wav() -> bytes:
    from support import testmedia

    return _wav(np.clip(8.0 * testmedia.tone(4.0, contract.SAMPLE_RATE, freq=700.0), -1.0, 1.0))


def _zero_rate_wav() -> bytes:
    raw = bytearray(_tone_wav())
    raw[24:28] = struct.pack("<I", 0)  # fmt chunk sample rate
    return bytes(raw)


def _multipart_without_close() -> bytes:
    return (
        b"--avpenet-corpus-boundary-6b1d\r\n"
        b'Content-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n' + _tone_wav()[:5000]
    )


def _many_parts(n: int) -> bytes:
    empty = b'--avpenet-corpus-boundary-6b1d\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n'
    return empty * n + b"--avpenet-corpus-boundary-6b1d--\r\n"


def _repeated_age_group(n: int) -> bytes:
    from corpus.wire import MEDIA_DATA, REQUEST_FIELDS, _field

    audio = _field(REQUEST_FIELDS["audio"], _field(MEDIA_DATA, _tone_wav()))
    return audio + _field(REQUEST_FIELDS["age_group"], b"adult") * n


def _truncated_grpc() -> bytes:
    from corpus.wire import _field

    return _field(2, _field(1, _tone_wav()))[:3000]  # an audio MediaFile cut mid-field


def _grpc_bad_utf8() -> bytes:
    from corpus.wire import _field

    return _field(2, _field(1, _tone_wav())) + _field(5, b"\xff\xfeadult")


def build(limits) -> list[Case]:
    """Every case, sized against `limits` (preprocess_service.settings.Limits)."""
    wav, npz = _tone_wav, _npz
    too_long = max(limits.max_duration_s, 600.0) + 60.0  # "10+ minutes" and beyond the configured limit
    ctype = "multipart/form-data; boundary=avpenet-corpus-boundary-6b1d"
    rng = np.random.default_rng(7)
    noise = MARKER + rng.bytes(6000)

    def u(*files, age=b"adult", **fields) -> Callable[[], Upload]:
        extra = tuple((k, v if isinstance(v, bytes) else v.encode()) for k, v in fields.items())
        return lambda: Upload(
            files=tuple(f() if callable(f) else f for f in files), fields=(("age_group", age), *extra)
        )

    def part(name: str, ext: str, data: Callable[[], bytes]) -> Callable[[], tuple[str, str, bytes]]:
        return lambda: (name, _named(ext), data())

    from support import testmedia

    cases = [
        # --- controls: hostile-looking but valid, so they must be scored ---
        Case(
            "valid_audio_landmarks",
            "WAV + face track with a subject reference (the log canary)",
            *OK,
            u(part("audio", "wav", wav), part("landmarks", "npz", npz), subject_ref=SUBJECT_MARKER),
        ),
        Case(
            "wrong_extension_valid_content",
            "an MP4 sent as audio named .wav: content decides",
            *OK,
            u(part("audio", "wav", _mp4_with_sound)),
        ),
        Case(
            "silence",
            "4 s of digital silence: scored (silence is information), not refused",
            *OK,
            u(part("audio", "wav", lambda: _wav(np.zeros(4 * contract.SAMPLE_RATE, np.float32)))),
        ),
        Case(
            "clipped_audio",
            "a hard-clipped, full-scale recording",
            *OK,
            u(part("audio", "wav", _clipped_wav)),
        ),
        Case(
            "two_faces",
            "video with two faces side by side: one face is tracked",
            *OK,
            u(part("video", "mp4", _two_faces)),
        ),
        Case(
            "unknown_grpc_field",
            "an extra part: HTTP refuses an unknown part; proto3 skips unknown fields",
            422,
            "OK",
            u(part("audio", "wav", wav), part("thermal", "bin", lambda: noise)),
        ),
        Case(
            "duplicate_part",
            "the audio part twice: HTTP refuses; protobuf merges (the last one wins)",
            422,
            "OK",
            u(part("audio", "wav", wav), part("audio", "wav", wav)),
        ),
        # --- request shape ---
        Case(
            "empty_body",
            "no body at all / an empty message",
            422,
            "INVALID_ARGUMENT",
            lambda: Upload(http_body=b"", http_content_type=ctype, grpc_raw=b""),
        ),
        Case(
            "not_multipart",
            "a JSON body / JSON bytes as a protobuf message",
            415,
            "INVALID_ARGUMENT",  # the gateway parses the bytes (grpc_wire), not the proxy
            lambda: Upload(
                http_body=json.dumps({"audio": "AAAA"}).encode(),
                http_content_type="application/json",
                grpc_raw=json.dumps({"audio": "AAAA"}).encode(),
            ),
        ),
        Case(
            "multipart_without_boundary",
            "multipart Content-Type without a boundary / a truncated message",
            422,
            "INVALID_ARGUMENT",  # the gateway parses the bytes (grpc_wire), not the proxy
            lambda: Upload(
                http_body=b"--x\r\n\r\n", http_content_type="multipart/form-data", grpc_raw=_truncated_grpc()
            ),
        ),
        Case(
            "multipart_cut_off",
            "a multipart body cut off before its closing boundary / random bytes",
            422,
            "INVALID_ARGUMENT",  # the gateway parses the bytes (grpc_wire), not the proxy
            lambda: Upload(
                http_body=_multipart_without_close(),
                http_content_type=ctype,
                grpc_raw=b"\x0a\xff\xff\xff\xff\x0f" + noise,
            ),
        ),
        Case("missing_media_parts", "only age_group, no media", 422, "INVALID_ARGUMENT", u()),
        Case(
            "non_utf8_field",
            "age_group bytes that are not UTF-8",
            422,
            "INVALID_ARGUMENT",  # the gateway parses the bytes (grpc_wire), not the proxy
            lambda: Upload(
                files=(("audio", _named("wav"), wav()),),
                fields=(("age_group", b"\xff\xfeadult"),),
                grpc_raw=_grpc_bad_utf8(),
            ),
        ),
        Case(
            "unknown_age_group",
            "age_group=toddler",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", wav), age=b"toddler"),
        ),
        Case(
            "clip_and_audio",
            "clip plus a separate audio part (ambiguous)",
            422,
            "INVALID_ARGUMENT",
            u(part("clip", "mp4", _mp4_with_sound), part("audio", "wav", wav)),
        ),
        Case(
            "video_and_landmarks",
            "video plus a landmarks file (ambiguous)",
            422,
            "INVALID_ARGUMENT",
            u(part("video", "mp4", _mp4_with_sound), part("landmarks", "npz", npz)),
        ),
        Case(
            "oversized_text_field",
            "a 10 kB encounter_ref",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", wav), encounter_ref="Encounter/" + "9" * 10_000),
        ),
        Case(
            "free_text_subject_ref",
            "a name and birth date where a FHIR reference belongs (PHI canary)",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", wav), subject_ref=PHI_TEXT),
        ),
        Case(
            "recorded_at_year_1",
            "recorded_at 0001-01-01T00:00:00+01:00 (overflowed converting to UTC: a 500)",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", wav), recorded_at="0001-01-01T00:00:00+01:00"),
        ),
        Case(
            "thousands_of_parts",
            "20,000 empty parts (each ~100x its bytes once collected) / age_group sent 20,000 times",
            422,
            "OK",  # protobuf merges a repeated field: the last one wins
            lambda: Upload(
                http_body=_many_parts(20_000),
                http_content_type=ctype,
                grpc_raw=_repeated_age_group(20_000),
            ),
        ),
        # --- bytes and containers ---
        Case(
            "empty_file",
            "an audio part of 0 bytes",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", lambda: b"")),
        ),
        Case(
            "random_bytes",
            "6 kB of random bytes as audio",
            415,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", lambda: noise)),
        ),
        Case(
            "wav_sent_as_clip",
            "WAV content in the clip part named .mp4: no video container",
            415,
            "INVALID_ARGUMENT",
            u(part("clip", "mp4", wav)),
        ),
        Case(
            "unsupported_container",
            "Sun AU audio (a container the service does not decode)",
            415,
            "INVALID_ARGUMENT",
            u(part("audio", "au", _sun_au)),
        ),
        Case(
            "unsupported_codec",
            "Matroska whose video CodecID FFmpeg does not know",
            415,
            "INVALID_ARGUMENT",
            u(part("video", "mkv", _unknown_codec_mkv)),
        ),
        Case(
            "truncated_wav",
            "a WAV cut inside its header",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", lambda: wav()[:30])),
        ),
        Case(
            "truncated_mp4",
            "the first 40% of an MP4 (index at the end is missing)",
            422,
            "INVALID_ARGUMENT",
            u(part("clip", "mp4", lambda: _mp4_with_sound()[: len(_mp4_with_sound()) * 2 // 5])),
        ),
        Case(
            "zero_sample_rate_wav",
            "a WAV header declaring 0 Hz",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", _zero_rate_wav)),
        ),
        Case(
            "nan_samples",
            "a float WAV with NaN samples",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", _nan_wav)),
        ),
        Case(
            "zero_length_audio",
            "a valid WAV with no samples: nothing to score",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", lambda: _wav(np.zeros(0, np.float32)))),
        ),
        Case(
            "audio_a_tenth_of_a_second",
            "a tenth of a second of tone, no face: no window counts it as sound",
            422,
            "INVALID_ARGUMENT",
            u(part("audio", "wav", lambda: _tone_wav(0.1))),
        ),
        # --- limits ---
        Case(
            "huge_upload",
            "an upload 1 MiB beyond max_upload_bytes",
            413,
            "RESOURCE_EXHAUSTED",
            u(
                part(
                    "audio",
                    "wav",
                    lambda: _wav(
                        np.zeros(limits.max_upload_bytes // 2 + (1 << 19), np.float32), subtype="PCM_16"
                    ),
                )
            ),
        ),
        Case(
            "absurd_duration_audio",
            f"a small FLAC of {too_long / 60:.0f} min of silence",
            413,
            "RESOURCE_EXHAUSTED",
            u(part("audio", "flac", lambda: _silent_long_flac(too_long))),
        ),
        Case(
            "absurd_duration_video",
            f"a 2-frame MP4 whose second frame is at {too_long:.0f} s",
            413,
            "RESOURCE_EXHAUSTED",
            u(part("video", "mp4", lambda: _long_gap_mp4(too_long))),
        ),
        Case(
            "decompression_bomb_video",
            "H.264 black frames over max_pixels: KBs that decode to 100s of MB",
            413,
            "RESOURCE_EXHAUSTED",
            u(part("video", "mp4", lambda: _bomb_mp4(limits))),
        ),
        Case(
            "huge_frames_16k",
            "MJPEG Matroska claiming 16384 x 16384 frames: refused before any frame is allocated",
            422,
            "INVALID_ARGUMENT",
            u(part("video", "mkv", _claims_16k_frames)),
        ),
        Case(
            "tiny_frames",
            "2 x 2 pixel frames and no sound: no face can be found",
            422,
            "INVALID_ARGUMENT",
            u(part("video", "mp4", _tiny_frames)),
        ),
        Case(
            "impossible_pixel_shape",
            "a clip with sound whose video declares pixels 5 times as wide as tall (5:1): a forged header",
            422,
            "INVALID_ARGUMENT",
            u(
                part(
                    "clip",
                    "mp4",
                    lambda: _video(
                        testmedia.noise_frames(30, size=(96, 64)), audio=True, sample_aspect=Fraction(5)
                    ),
                )
            ),
        ),
        Case(
            "video_without_face",
            "noise frames, no sound track: nothing to score",
            422,
            "INVALID_ARGUMENT",
            u(part("video", "mp4", lambda: _video(testmedia.noise_frames(20, size=(96, 64))))),
        ),
        # --- landmarks files (privacy mode) ---
        Case(
            "nan_landmarks",
            "landmarks with NaN",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", lambda: _npz_with(landmarks=_nan_landmarks(np.nan)))),
        ),
        Case(
            "inf_landmarks",
            "landmarks with +Inf",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", lambda: _npz_with(landmarks=_nan_landmarks(np.inf)))),
        ),
        Case(
            "wrong_shape_landmarks",
            "68-point landmarks instead of 478",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", lambda: _npz_with(landmarks=np.zeros((40, 68, 3), np.float32)))),
        ),
        Case(
            "landmarks_without_image_size",
            "a face track whose image_size is 0x0 (its aspect ratio unknown)",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", lambda: _npz_with(image_size=np.zeros(2, np.int32)))),
        ),
        Case(
            "landmarks_missing_arrays",
            "an npz without head_pose",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", lambda: _npz_with(head_pose=None))),
        ),
        Case(
            "pickled_landmarks",
            "an npz holding a pickled object array",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", _pickled_npz)),
        ),
        Case(
            "truncated_npz",
            "the first half of a landmarks file",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", lambda: npz()[: len(npz()) // 2])),
        ),
        Case(
            "npz_frame_bomb",
            "a track one frame over the duration limit (zeros: a tiny file)",
            413,
            "RESOURCE_EXHAUSTED",
            u(
                part(
                    "landmarks", "npz", lambda: _npz_frame_bomb(int(limits.max_duration_s * contract.FPS) + 1)
                )
            ),
        ),
        Case(
            "npz_zip_bomb",
            "an npz member that inflates to ~115 MB (refused from its header)",
            422,
            "INVALID_ARGUMENT",
            u(part("landmarks", "npz", _npz_zip_bomb)),
        ),
    ]
    from corpus import hostile_media

    cases += hostile_media.build()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def _nan_landmarks(value: float) -> np.ndarray:
    arr = _track().landmarks.copy()
    arr[3, 10, 0] = value
    return arr
