"""Whether an audio file that decodes no sample was cut short, read from its own structure.

A file cut inside its header fails in each decoder's terms ("Invalid data found when processing input",
"Channel count is zero", "No 'data' chunk marker"): true of the bytes left, but it sends the sender after
a format or codec problem that is not there. When no sample decodes and the file ends inside the structure
its header declares, the decoders (`sfaudio`, `avaudio`) refuse it with `cut`'s wording instead, the one an
Ogg cut in its headers gets. A file that is whole keeps its decoder's reason (a codec or format problem).
"""

from __future__ import annotations

from avpenet.errors import UndecodableMedia
from avpenet.features import media
from avpenet.features.chunkwalk import LAYOUTS, MAX_CHUNKS, Layout, walk

# Bytes of an AMR frame after its table-of-contents byte, by frame type (3GPP TS 26.101 / 26.201; the
# reserved types and NO_DATA carry none).
AMR_NB_FRAME = (12, 13, 15, 17, 19, 20, 26, 31, 5, 0, 0, 0, 0, 0, 0, 0)
AMR_WB_FRAME = (17, 23, 32, 36, 40, 46, 50, 58, 60, 5, 0, 0, 0, 0, 0, 0)
# A FLAC's last frame is looked for this far from its end (a header further back: not whole; header
# checks and the CRC-16 are Python loops): encoders write blocks of at most 4,608 samples (libFLAC,
# FFmpeg), under 150 KB for 8 channels of 32 bits.
MAX_FLAC_FRAME = 1 << 18
# Sync codes (FF F8 / FF F9) looked at from a FLAC's end for its last frame's header: a real last frame
# holds a handful in its coded samples (2 in 65,536 byte pairs of random data), a hostile upload thousands.
MAX_FLAC_HEADERS = 64


def cut(kind: str) -> UndecodableMedia:
    """The refusal of a file of an audio type that decodes no sample: it declares audio, so it is broken,
    never "no audio" (which would score a clip on the face alone)."""
    return UndecodableMedia(
        f"{media.describe(kind)} declares audio but no sample decodes: it is corrupt or truncated; "
        "send the complete recording"
    )


def cut_short(source: media.Source, kind: str) -> bool:
    """Whether the file ends inside its own structure: before the chunk of its samples (one of `LAYOUTS`)
    is whole (what follows it is not looked at), inside FLAC's metadata blocks or frames, or before an
    AMR's first frame is whole. Kinds without such a structure here (Ogg, MP3, AAC) are never called cut."""
    data = media.as_file(source).getbuffer()  # a view: the upload is not copied to be walked
    if kind in LAYOUTS:
        return _chunks_cut(data, LAYOUTS[kind])
    if kind == "flac":  # searched with bytes.rfind: a copy, on this path only (no sample decoded)
        return _flac_cut(bytes(data))
    if kind == "amr":
        return _amr_cut(data)
    return False


def description_cut(source: media.Source, kind: str) -> bool:
    """Whether the file ends before the chunk describing its samples (`Layout.form`: rate, channels,
    length) is whole. A decoder still reads a rate from the bytes left (libsndfile reads an AIFF cut inside
    a COMM chunk that follows its samples as 1 Hz), so a limit refused from that header is the cut's doing,
    not the sender's recording: `sfaudio` refuses it as cut. A whole description keeps its refusal (a CAF
    at 4000 Hz cut mid-upload is refused for its rate, which no complete upload would fix)."""
    layout = LAYOUTS.get(kind)
    return layout is not None and _ends_before(media.as_file(source).getbuffer(), layout, layout.form, None)


def before_samples(source: media.Source, kind: str) -> bool:
    """Whether the file ends before its first sample: inside or before its samples' chunk header and the
    fields after it (`Layout.lead`). FFmpeg decoded a CAF cut inside its edit count as a sample or three
    of those bytes (0, or -0.98 for mu-law), scored as sound; `sfaudio` refuses it as cut instead."""
    layout = LAYOUTS.get(kind)
    return layout is not None and _ends_before(media.as_file(source).getbuffer(), layout, layout.samples, 0)


def _ends_before(data: memoryview, layout: Layout, ident: bytes, body: int | None) -> bool:
    """Whether `data` ends before chunk `ident` is whole (`body` None) or before its first `body` bytes
    after `layout.lead` are: walking its chunks, also when it ends inside one before it."""
    for chunk in walk(data, layout):
        if not chunk.ident:
            return True  # ended before the chunk (or inside a chunk's id and size)
        if chunk.ident == ident and (body is not None or not chunk.open_ended):
            return (chunk.end if body is None else chunk.body + layout.lead + body) > len(data)
        if chunk.open_ended:
            return False  # runs to the end of the file; or a Wave64 size no chunk can have
        if chunk.end > len(data):
            return True
    return False


def _chunks_cut(data: memoryview, layout: Layout) -> bool:
    """Cut when the file ends before its samples' chunk and the chunk describing them are whole (AIFF allows
    COMM after SSND). The walk stops once both are (a CAF whose packets vary in size goes on to its packet
    table, which FFmpeg writes after the samples): bytes after them (a few junk bytes, a LIST or id3 chunk
    cut short) are no cut, and a whole file with them keeps its decoder's reason."""
    found, described, table_due = False, False, False
    for chunk in walk(data, layout):
        if not chunk.ident:  # ended between chunks (before one it needs), or inside a chunk's id and size
            return chunk.at < len(data) or not (found and described) or table_due
        if chunk.open_ended:
            return False  # runs to the end of the file; or a Wave64 size no chunk can have
        if chunk.end > len(data):
            return True
        if layout.table and chunk.ident == b"desc":
            table_due = _varying_packets(data[chunk.body : chunk.end])
        table_due = table_due and chunk.ident != layout.table
        found = found or chunk.ident == layout.samples
        described = described or chunk.ident == layout.form
        if found and described and not table_due:
            return False
    return False


def _varying_packets(desc: memoryview) -> bool:
    """A CAF `desc` (rate, format, flags, bytes per packet, frames per packet...) whose packets vary in size
    or length (a 0 there, as ALAC's and AAC's): their sizes are in a `pakt` chunk the file needs. Linear
    PCM's never vary: an `lpcm` desc saying so is malformed, not a file cut before its table."""
    return len(desc) >= 24 and desc[8:12] != b"lpcm" and bytes(4) in (desc[16:20], desc[20:24])


def _flac_cut(data: bytes) -> bool:
    """Cut inside the metadata blocks (STREAMINFO, seek table, padding...) before the last one ends, or in
    the frames after them (`_frames_cut`). Asked only when no sample decodes: libsndfile's "flac decoder
    lost sync" or "Internal psf_fseek() failed" for a FLAC cut within its first read (16,384 frames) sent
    the sender after a codec problem that is not there."""
    at = 4  # after "fLaC"
    for _ in range(MAX_CHUNKS):
        if at + 4 > len(data):
            return True
        last, size = data[at] & 0x80, int.from_bytes(data[at + 1 : at + 4], "big")
        at += 4 + size
        if at > len(data):
            return True
        if last:
            return _frames_cut(data, at)
    return False


def _frames_cut(data: bytes, first: int) -> bool:
    """Whether the frames from `first` end inside a frame, or before the samples STREAMINFO declares. A
    frame has no size, but its last two bytes are the CRC-16 of the rest from its header (the last valid
    one, `_frame_header`), and that header says which samples it holds. So a whole file of frames no decoder
    reads is not called cut; one whose tail is unreadable is (the refusal says corrupt or truncated: either
    way it is not whole audio). The frames may be followed by a tag (`_tags_start`). At most
    MAX_FLAC_HEADERS sync codes are looked at, from the end: an upload of thousands of them (each passing
    for a header until its CRC-8) costs no more, and is not called cut."""
    declared = int.from_bytes(data[21:26], "big") & 0xFFFFFFFFF  # STREAMINFO's total samples (0: unknown)
    end = _tags_start(data, first)
    first = max(first, end - MAX_FLAC_FRAME)  # a last frame longer is not whole: not looked for
    last = {sync: data.rfind(sync, first, end) for sync in (b"\xff\xf8", b"\xff\xf9")}  # each searched once
    for _ in range(MAX_FLAC_HEADERS):
        if (at := max(last.values())) < 0:
            return first < end or declared > 0  # bytes but no frame; or no frame where samples are declared
        held = _frame_header(data, at, int.from_bytes(data[10:12], "big"))  # STREAMINFO's largest block
        if held is not None:
            whole = _crc16(data[at : end - 2]) == int.from_bytes(data[end - 2 : end], "big")
            return not whole or held < declared
        last[data[at : at + 2]] = data.rfind(data[at : at + 2], first, at + 1)
    return False


def _tags_start(data: bytes, first: int) -> int:
    """Where tags some taggers append to a FLAC start (an APEv2 tag, then an ID3v1 tag: "TAG" and 125
    bytes), or its length when it ends with neither: its last frame ends there."""
    end = len(data)
    if end - 128 >= first and data[end - 128 : end - 125] == b"TAG":
        end -= 128
    if end - 32 >= first and data[end - 32 : end - 24] == b"APETAGEX":  # the APEv2 footer
        size = int.from_bytes(data[end - 20 : end - 16], "little")  # with the footer, without a header
        size += 32 if data[end - 9] & 0x80 else 0  # the flags' "has a header"
        end -= size if 32 <= size <= end - first else 0
    return end


def _frame_header(data: bytes, at: int, fixed_block: int) -> int | None:
    """The samples up to the end of a FLAC frame whose header is at `at` (its frame or sample number and
    block size), when that header has values a frame may have and a matching CRC-8; else None."""
    head = data[at : at + 16]
    if len(head) < 6 or not head[2] >> 4 or head[2] & 0x0F == 0x0F or head[3] >> 4 > 10:
        return None
    if (head[3] >> 1) & 0x07 == 3 or head[3] & 1:  # a reserved sample size; the reserved bit
        return None
    lead = 8 - (head[4] ^ 0xFF).bit_length()  # UTF-8 style: the first byte's leading ones count its bytes
    if lead == 1 or lead > 7 or len(head) < 5 + lead:
        return None
    number, pos = head[4] & (0x7F >> lead), 5
    for byte in head[5 : 4 + lead]:
        number, pos = number << 6 | byte & 0x3F, pos + 1
    code, extra = head[2] >> 4, {6: 1, 7: 2}.get(head[2] >> 4, 0)
    end = pos + extra + {12: 1, 13: 2, 14: 2}.get(head[2] & 0x0F, 0)
    if end >= len(head) or _crc8(head[:end]) != head[end]:
        return None
    block = (
        int.from_bytes(head[pos : pos + extra], "big") + 1
        if extra
        else (192 if code == 1 else 576 << (code - 2) if code < 6 else 256 << (code - 8))
    )
    return (number if head[1] & 1 else number * fixed_block) + block


def _crc8(data: bytes) -> int:
    """FLAC's frame header CRC-8 (polynomial x^8 + x^2 + x + 1, initial 0), a byte at a time."""
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    """FLAC's frame CRC-16 (polynomial x^16 + x^15 + x^2 + 1, initial 0), a byte at a time."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _crc(data: bytes, bits: int, poly: int) -> int:
    """A CRC of `bits` (MSB first, initial 0), bit by bit: for the tables."""
    top, mask, crc = 1 << (bits - 1), (1 << bits) - 1, 0
    for byte in data:
        crc ^= byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


_CRC8 = [_crc(bytes([n]), 8, 0x07) for n in range(256)]
_CRC16 = [_crc(bytes([n]), 16, 0x8005) for n in range(256)]


def _amr_cut(data: memoryview) -> bool:
    """Cut before the first frame after the "#!AMR" header is whole (an AMR has no other header)."""
    wideband = data[:9] == b"#!AMR-WB\n"
    at = 9 if wideband else 6
    if at >= len(data):
        return True
    frame = (AMR_WB_FRAME if wideband else AMR_NB_FRAME)[(data[at] >> 3) & 0x0F]
    return at + 1 + frame > len(data)
