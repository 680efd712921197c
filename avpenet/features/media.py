"""Container sniffing and PyAV opening shared by the audio and video decoders.

The container kind is read from the first bytes, never from a file name or a client's Content-Type, so
errors are consistent: content of a kind we do not decode is UnsupportedMedia (415); a supported kind whose
content fails to decode (truncated, corrupt) is UndecodableMedia (422). Bytes are decoded from memory: patient
media is never written to disk.

FFmpeg is never left to guess. Each sniffed kind is opened with its own demuxer (`DEMUXERS`), so bytes that
merely start like an MP3 frame or an `ftyp` box are never probed as SDP, HLS or a concat list;
`format_whitelist` keeps any demuxer from handing over to another, and an empty `protocol_whitelist` forbids
every protocol (udp, rtp, http, file...) for nested opens: an upload is bytes in memory and may open nothing.
An MP4/MOV's sample tables are checked against the file size and the duration limit before FFmpeg allocates
its index (`mp4index`), whichever box the file starts with.

Sniffing is strict where formats share bytes: an MPEG audio frame and an ADTS AAC frame share the 0xFFF sync
(ADTS is layer 00, which MPEG audio reserves); MPEG-TS and GIF share a first byte (0x47), so MPEG-TS is named
only when the sync byte repeats at one packet spacing.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

from avpenet.errors import UndecodableMedia, UnsupportedMedia
from avpenet.features.memfile import ViewFile
from avpenet.features.mp4index import SampleBounds, check_sample_tables

Source = str | os.PathLike | bytes | bytearray | memoryview

# kind -> what to tell an integrator; ISO-BMFF covers MP4/MOV/M4A, EBML covers MKV/WebM; aac is ADTS (.aac);
# aiff covers AIFF and AIFF-C (.aif/.aiff/.aifc), caf Apple's Core Audio Format, w64 Sony Wave64; amr is
# AMR-NB or AMR-WB in their single-channel storage format (.amr, Android voice recorders: "#!AMR\n").
AUDIO_FILE_KINDS = ("wav", "flac", "ogg", "aiff", "caf", "w64", "mp3", "aac", "amr")
# The kinds libsndfile reads (sfaudio). An Ogg or CAF it cannot read is read by PyAV: both hold codecs it
# lacks (Ogg Speex; CAF AAC, IMA4, FFmpeg's ALAC), and it calls a CAF cut mid-upload malformed where FFmpeg
# keeps its decoded start. AIFF holds what libsndfile decodes, and so do WAV and W64 but for codecs it lacks,
# which FFmpeg reads (`wavcodec`): its reasons stand (a file cut inside its header is refused as cut instead:
# truncation).
SOUND_FILE_KINDS = ("wav", "flac", "ogg", "aiff", "caf", "w64")
SOUND_THEN_AV_KINDS = ("ogg", "caf")
AV_CONTAINER_KINDS = ("isobmff", "ebml")
# Files of one codec's frames: a track FFmpeg cannot read, or one that decodes no sample, is a broken one.
ONE_CODEC_KINDS = ("mp3", "aac", "amr")
# Kinds whose duration FFmpeg guesses from the bit rate of the first frames, not from a header (an AMR's
# comes out 3-5% long; an ADTS AAC or a VBR MP3 without a Xing header that starts quietly, 30-90% long):
# only their decoded length is held to the limit, so one within the duration grace is cut, not refused. So
# is a WAV's or Wave64's that FFmpeg reads (MP3 data or another codec libsndfile lacks: `wavcodec`): from its
# fmt chunk's byte rate, a nominal one, or when that is 0 from the first frames (FFmpeg ignores a fact
# chunk's length for MP3), a VBR recording of 19.8 s came out 20.9 s (written by FFmpeg) to 37.5 s.
GUESSED_DURATION_KINDS = ("amr", "aac", "mp3", "wav", "w64")
SUPPORTED_AUDIO = (
    "WAV, FLAC, OGG, AIFF/AIFC, CAF, Wave64, MP3, AAC (ADTS), AMR-NB/AMR-WB, "
    "or the audio track of MP4/MOV/WebM/MKV"
)
SUPPORTED_VIDEO = "MP4, MOV, WebM or MKV"
# Enough for TS_PACKETS MPEG-TS packets of the longest kind (204 bytes); reading it costs nothing.
HEAD_BYTES = 1024
# The FFmpeg demuxer of each kind PyAV decodes (ISO-BMFF: "mov,mp4,m4a,3gp,3g2,mj2"; EBML: "matroska,webm").
DEMUXERS = {
    "isobmff": "mov", "ebml": "matroska", "mp3": "mp3", "aac": "aac", "ogg": "ogg", "wav": "wav",
    "caf": "caf", "amr": "amr", "w64": "w64",
}  # fmt: skip
WAV_KINDS = ("wav", "w64")  # whose `fmt ` chunk names their codec (`wavcodec`)
# Sony Wave64 starts with the GUID of its `riff` chunk, then a 64-bit size and the `wave` GUID.
W64_RIFF = bytes.fromhex("726966662e91cf11a5d628db04c10000")
W64_WAVE = bytes.fromhex("77617665f3acd3118cd100c04f8edb8a")
# Top-level boxes an MP4/MOV may start with other than `ftyp` (those FFmpeg's mov probe knows): QuickTime
# files before `ftyp` existed, and some cameras, start with `wide` then `mdat`; `free`/`skip` pad a header
# rewritten in place; a file written moov-first may have no `ftyp` at all.
FIRST_BOXES = {b"moov", b"mdat", b"wide", b"free", b"skip", b"junk", b"pnot", b"udta", b"uuid"}
# MPEG-TS packets: (offset of the first 0x47 sync byte, packet size): 188 bytes; 192 with a 4-byte timecode
# first (M2TS/AVCHD .mts); 204 with Reed-Solomon bytes. TS_PACKETS syncs in a row name it; one 0x47 does not.
TS_LAYOUTS = ((0, 188), (4, 192), (0, 192), (0, 204))
TS_PACKETS = 4
# A recording has a few streams (video, audio, timecode, metadata). FFmpeg's default cap is 1000, and 990
# forged MP4 tracks cost 7.7 s and 840 MB to open; with this cap FFmpeg ignores streams past it (and the MP4
# walker refuses more tracks with a reason).
MAX_STREAMS = 16
# Codec framing runs media a little past its length: an encoder pads its last audio frame (a 60.0-s AAC track
# in ADTS or MKV decodes up to one frame longer; an MP4's is cut to its declared duration, `avaudio`) and a
# container's duration covers its longest track. Media up to this far past a limit
# is cut to the limit (audio.cut_to) instead of refused; anything longer is refused as before.
DURATION_GRACE_S = 0.5
# How far apart two tracks' starts, or a track's timestamps and its decoded length, may be and still count as
# one timeline: codec framing and priming (an AAC frame is 64 ms at 16 kHz, Opus pre-skip 6.5 ms, MKV rounds
# to 1 ms). Larger differences are real (a track that starts late, packets a recorder dropped) and are put
# right; this is under one sampled video frame (1 / contract.FPS).
TRACK_SLACK_S = 0.07
# A jump in a track's timestamps larger than this is a timestamp break (a clock reset, a corrupt timestamp),
# not dropped media: no silence is filled for it, nothing is trimmed (avaudio).
TRACK_BREAK_S = 5.0
# Containers recognised only to be refused with a reason (sniff_refused): video the API does not accept.
REFUSED_VIDEO = {"avi": "AVI", "mpegts": "MPEG-TS", "mpegps": "MPEG-PS", "flv": "FLV", "asf": "ASF/WMV"}


def sniff(head: bytes) -> str | None:
    """The container kind of media starting with `head`, or None when it is none we decode."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if len(head) >= 12 and head[:4] == b"RF64" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:8] == b"caff\x00\x01\x00\x00":  # version 1, flags 0: the only CAF there is
        return "caf"
    if head[:16] == W64_RIFF and head[24:40] == W64_WAVE:
        return "w64"
    if head[:6] == b"#!AMR\n" or head[:9] == b"#!AMR-WB\n":  # not "#!AMR_MC1.0": FFmpeg reads no multichannel
        return "amr"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "isobmff"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "ebml"
    if head[:3] == b"ID3":
        return "mp3"  # what the tag labels is read behind it (`audio_kind`)
    return _mpeg_audio(head) or ("isobmff" if _first_box(head) else None)


def audio_kind(source: Source, head: bytes) -> str | None:
    """`sniff`, looking behind an ID3v2 tag: MP3 and ADTS AAC files may both start with one."""
    kind = sniff(head)
    if kind != "mp3" or head[:3] != b"ID3" or len(head) < 10:
        return kind
    flags, size = head[5], head[6:10]
    end = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(size)) + (10 if flags & 0x10 else 0)
    if isinstance(source, bytes | bytearray | memoryview):
        behind = bytes(source[end : end + 2])
    else:
        with open(source, "rb") as fh:
            fh.seek(end)
            behind = fh.read(2)
    return "aac" if _mpeg_audio(behind) == "aac" else "mp3"


def _mpeg_audio(head: bytes) -> str | None:
    """The kind of an MPEG audio frame header ("mp3") or an ADTS one ("aac"), else None. Both start with an
    11-bit sync; ADTS has the full 12-bit 0xFFF and layer 00, a layer MPEG audio reserves."""
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    if head[1] & 0x06:
        return "mp3"
    return "aac" if head[1] & 0xF0 == 0xF0 else None


def _first_box(head: bytes) -> bool:
    """An MP4/MOV starting with a top-level box other than `ftyp` (FIRST_BOXES) of a size a box can have;
    when the box ends inside `head`, the next box's type must be four printable characters."""
    if len(head) < 8 or head[4:8] not in FIRST_BOXES:
        return False
    size = int.from_bytes(head[:4], "big")
    if size == 1:  # a 64-bit size follows
        return len(head) >= 16 and int.from_bytes(head[8:16], "big") >= 16
    if 0 < size < 8:
        return False
    after = head[size + 4 : size + 8] if size else b""
    return len(after) < 4 or all(0x20 <= b < 0x7F for b in after)


def sniff_refused(head: bytes) -> str | None:
    """The name of a video container we recognise but do not accept (AVI, MPEG-TS...), else None."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return REFUSED_VIDEO["avi"]
    if _mpegts(head):
        return REFUSED_VIDEO["mpegts"]
    if head[:4] == b"\x00\x00\x01\xba":
        return REFUSED_VIDEO["mpegps"]
    if head[:3] == b"FLV":
        return REFUSED_VIDEO["flv"]
    if head[:4] == b"\x30\x26\xb2\x75":
        return REFUSED_VIDEO["asf"]
    return None


def _mpegts(head: bytes) -> bool:
    """The 0x47 sync byte at every packet start of one TS_LAYOUTS, TS_PACKETS times or more ("GIF89a" and
    other files merely starting with 0x47 are not MPEG-TS)."""
    for first, size in TS_LAYOUTS:
        starts = range(first, len(head), size)
        if len(starts) >= TS_PACKETS and all(head[i] == 0x47 for i in starts):
            return True
    return False


def refusal(head: bytes, what: str, supported: str) -> UnsupportedMedia:
    """UnsupportedMedia for content no decoder here takes, naming a recognised video container."""
    container = sniff_refused(head)
    if container is not None:
        return UnsupportedMedia(f"{container} video containers are not accepted; send {SUPPORTED_VIDEO}")
    from avpenet.features.content_hint import described

    return UnsupportedMedia(
        f"unsupported {what}; send {supported} ({described(head)}; the content decides, not the file name)"
    )


def read_head(source: Source) -> bytes:
    """The first HEAD_BYTES of a path or a buffer; an empty or missing input is UndecodableMedia."""
    if isinstance(source, bytes | bytearray | memoryview):
        head = bytes(source[:HEAD_BYTES])
    else:
        try:
            with open(source, "rb") as fh:
                head = fh.read(HEAD_BYTES)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise UndecodableMedia(f"cannot read media file ({type(exc).__name__})") from None
    if not head:
        raise UndecodableMedia("media is empty (0 bytes)")
    return head


def as_file(source: Source, cls: type[ViewFile] = ViewFile) -> ViewFile:
    """What soundfile / PyAV open: always an in-memory file (of `cls`), over the caller's buffer (no copy of
    the upload). A path is read first, because FFmpeg is allowed no protocol at all (not even `file`), so a
    path handed to it would not open."""
    if isinstance(source, bytes | bytearray | memoryview):
        return cls(source)
    return cls(Path(source).read_bytes())


def open_av(source: Source, kind: str, bounds: SampleBounds | None = None) -> av.container.InputContainer:
    """Open a container with PyAV, its own demuxer and no protocol; errors become UnsupportedMedia /
    UndecodableMedia; an ISO-BMFF whose sample tables exceed `bounds` is refused before FFmpeg reads it."""
    if kind not in DEMUXERS:
        raise UnsupportedMedia(f"unsupported media type; send {SUPPORTED_VIDEO}")
    if kind == "isobmff":
        check_sample_tables(source, bounds or SampleBounds())
    demuxer = DEMUXERS[kind]
    options = {"protocol_whitelist": "", "format_whitelist": demuxer, "max_streams": str(MAX_STREAMS)}
    try:
        return av.open(
            as_file(source), mode="r", format=demuxer, container_options=options, metadata_errors="ignore"
        )
    except av.error.FFmpegError as exc:
        raise UndecodableMedia(f"{describe(kind)} could not be opened: {_reason(exc)}") from None


def describe(kind: str) -> str:
    return {
        "isobmff": "MP4/MOV container",
        "ebml": "MKV/WebM container",
        "mp3": "MP3 file",
        "aac": "AAC (ADTS) file",
        "wav": "WAV file",
        "flac": "FLAC file",
        "ogg": "OGG file",
        "aiff": "AIFF file",
        "caf": "CAF file",
        "w64": "Wave64 file",
        "amr": "AMR file",
    }.get(kind, "media")


def _reason(exc: Exception) -> str:
    # FFmpeg messages name the problem ("Invalid data found when processing input") without media bytes;
    # drop the file name part PyAV appends.
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return str(text)[:200]


def av_error(kind: str, exc: Exception) -> UndecodableMedia:
    return UndecodableMedia(f"{describe(kind)} is corrupt or truncated: {_reason(exc)}")


def ended_early(err: UndecodableMedia) -> bool:
    """Whether `open_av` / `av_error` raised `err` for FFmpeg's end of file (the data ran out: a file cut
    short), not for data it could not parse; `raise ... from None` keeps the FFmpeg error as the context."""
    return isinstance(err.__context__, av.error.EOFError)


def main_stream(streams):
    """The track of one type a player would play: not cover art (an attached picture is a one-frame video
    track, and its face is no patient's), the one flagged default if any, else the first; None when none."""
    flags = av.stream.Disposition
    tracks = [s for s in streams if not s.disposition & flags.attached_pic]
    return next((s for s in tracks if s.disposition & flags.default), next(iter(tracks), None))
