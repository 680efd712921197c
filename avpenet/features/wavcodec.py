"""Which decoder reads a WAV's (RF64's) or Wave64's samples, by the codec its `fmt ` chunk names.

libsndfile has readers for a few codecs (`SNDFILE_TAGS`). Every other one it refused with "Malformed 'fmt '
chunk" (WAVE_FORMAT_EXTENSIBLE: "File contains data in an unimplemented format"), words an integrator cannot
act on, though FFmpeg decodes many of them whole (encoded by FFmpeg's own wav muxer: WMA, AC-3, E-AC-3, FLAC,
G.722, G.726, Yamaha ADPCM; AAC in ADTS frames). So a WAV or Wave64 of a codec libsndfile lacks is read by
FFmpeg (`avaudio`), as one of MP3 data already was: libsndfile hands MPEG audio to mpg123, which prints header
bytes of the upload to stderr ("Illegal Audio-MPEG-Header 0x74d8c299"), where PyAV keeps FFmpeg's log off.

A codec FFmpeg does not decode either is 415 naming its tag and what to send. So is raw AAC (frames without
ADTS headers): a WAV does not delimit its frames, and FFmpeg decoded the first 64 ms and dropped the rest.

The chunks are walked over the whole upload (a view of it, not a copy), not its first `media.HEAD_BYTES`:
a Broadcast WAV's `bext`, an `iXML` or a `JUNK` pad of over a kilobyte before `fmt ` sent a WMA or MP3 WAV
back to libsndfile (its "Malformed 'fmt ' chunk", its mpg123 log); one before `data` let raw AAC be scored
on its first 64 ms.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from avpenet.errors import UnsupportedMedia
from avpenet.features import avaudio, chunkwalk, media

# The format tags libsndfile reads: PCM, MS ADPCM, IEEE float, A-law, mu-law, IMA ADPCM, GSM 6.10, NMS ADPCM,
# G.721, and WAVE_FORMAT_EXTENSIBLE when its subformat is one of `SNDFILE_SUBFORMATS` (wavlike.c). Not MPEG
# audio (0x0050, 0x0055), which it does read, but through mpg123 and its log (above).
SNDFILE_TAGS = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0038, 0x0040})
EXTENSIBLE = 0xFFFE
# The tail of the KSDATAFORMAT_SUBTYPE GUIDs (a 2-byte format tag, then these 14 bytes; little-endian fields)
SUBTYPE_TAIL = bytes.fromhex("000000001000800000aa00389b71")
AMBISONIC_TAIL = bytes.fromhex("00002107d3118644c8c1ca000000")  # ambisonic B-format (wavlike.c)
SNDFILE_SUBFORMATS = frozenset(
    {tag.to_bytes(2, "little") + SUBTYPE_TAIL for tag in (0x0001, 0x0002, 0x0003, 0x0006, 0x0007)}
    | {tag.to_bytes(2, "little") + AMBISONIC_TAIL for tag in (0x0001, 0x0003)}
)
# The tags FFmpeg reads as AAC (riff.c; 0x1602, LATM, has its own sync and is not among them).
AAC_TAGS = frozenset({0x00FF, 0x1600, 0x1610, 0x4143, 0x706D, 0xA106})
FMT_MIN = 16  # a WAVEFORMAT: tag, channels, rate, byte rate, block align, bits per sample
SUBFORMAT_AT = 24  # WAVEFORMATEXTENSIBLE: cbSize, valid bits and channel mask come before its subformat


class Codec(NamedTuple):
    """A `fmt ` chunk's codec."""

    tag: int
    subformat: bytes = b""  # the GUID of WAVE_FORMAT_EXTENSIBLE's subformat (16 bytes, little-endian fields)

    def name(self) -> str:
        """How the refusal names it: "format tag 0x00FF", or the extensible subformat as a GUID."""
        if self.tag != EXTENSIBLE:
            return f"format tag 0x{self.tag:04X}"
        return f"format tag 0xFFFE, subformat {uuid.UUID(bytes_le=self.subformat)}"


def chunks(data: bytes | memoryview, kind: str) -> Iterator[chunkwalk.Chunk]:
    """The chunks of a WAV (RF64) or Wave64 `data` whose id and size lie within it: `chunkwalk.walk`, the
    walk that tells a cut, less a Wave64 size under its own header's (no body to read). An RF64 `data` chunk
    whose header says 0xFFFFFFFF (its size in `ds64`) ends this walk, as it always has: a `fmt ` after it is
    not looked for, and such a file goes to libsndfile."""
    for chunk in chunkwalk.walk(data, chunkwalk.LAYOUTS[kind]):
        if chunk.ident and chunk.end >= chunk.body:
            yield chunk
        if chunk.ident == b"data" and data[chunk.body - 4 : chunk.body] == b"\xff\xff\xff\xff":
            return


def codec(data: bytes | memoryview, kind: str) -> Codec | None:
    """The codec a `fmt ` chunk lying whole within `data` names; None when it does not (no codec is told
    from a chunk too short to be one: libsndfile's reason stands)."""
    for chunk in chunks(data, kind):
        if chunk.ident == chunkwalk.LAYOUTS[kind].form:
            body, size = chunk.body, chunk.end - chunk.body
            tag = int.from_bytes(data[body : body + 2], "little")
            if size < FMT_MIN or body + FMT_MIN > len(data) or not tag:  # 0: WAVE_FORMAT_UNKNOWN
                return None
            if tag != EXTENSIBLE:
                return Codec(tag)
            guid = bytes(data[body + SUBFORMAT_AT : body + SUBFORMAT_AT + 16])
            return Codec(tag, guid) if size >= SUBFORMAT_AT + 16 and len(guid) == 16 else None
    return None


def for_ffmpeg(source: media.Source, kind: str) -> Codec | None:
    """The codec a WAV or Wave64 names (its chunks walked over the whole upload, however far its `fmt `
    chunk lies) when libsndfile has no reader for it (MPEG audio included), else None."""
    found = codec(media.as_file(source).getbuffer(), kind)  # a view: the upload is not copied
    if found is None:
        return None
    known = SNDFILE_SUBFORMATS if found.tag == EXTENSIBLE else SNDFILE_TAGS
    return None if (found.subformat or found.tag) in known else found


def read(source: media.Source, kind: str, found: Codec, limit: float) -> tuple[np.ndarray | None, int]:
    """`avaudio.read` of a WAV or Wave64 whose codec (`found`, `for_ffmpeg`) libsndfile lacks; 415 naming the
    codec when FFmpeg does not decode it, or when it is AAC without ADTS frame headers (`_raw_aac`)."""
    if _raw_aac(source, kind, found):
        raise UnsupportedMedia(
            f"the audio codec in this {media.describe(kind)} ({found.name()}, AAC without ADTS frame "
            "headers: a WAV does not delimit its frames) is not supported; send the AAC as an ADTS (.aac) "
            "or MP4/M4A file, or PCM WAV"
        )
    try:
        return avaudio.read(source, kind, limit)
    except UnsupportedMedia:
        raise UnsupportedMedia(
            f"the audio codec in this {media.describe(kind)} ({found.name()}) is not supported; send PCM WAV "
            f"or {media.SUPPORTED_AUDIO.removeprefix('WAV, ')}"
        ) from None


def _raw_aac(source: media.Source, kind: str, found: Codec) -> bool:
    """An AAC tag whose `data` chunk (however far into the upload) does not start with an ADTS header."""
    if found.tag not in AAC_TAGS:
        return False
    data = media.as_file(source).getbuffer()  # a view: the upload is not copied
    samples = chunkwalk.LAYOUTS[kind].samples
    start = next((c.body for c in chunks(data, kind) if c.ident == samples), None)
    first = b"" if start is None else bytes(data[start : start + 2])
    return len(first) == 2 and media.sniff(first) != "aac"
