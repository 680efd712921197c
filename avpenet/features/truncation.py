"""Whether an audio file that decodes no sample was cut short, read from its own structure.

A file cut inside its header fails in each decoder's terms ("Invalid data found when processing input",
"Channel count is zero", "No 'data' chunk marker"): true of the bytes left, but it sends the sender after
a format or codec problem that is not there. When no sample decodes and the file ends inside the structure
its header declares, the decoders (`sfaudio`, `avaudio`) refuse it with `cut`'s wording instead, the one an
Ogg cut in its headers gets. A file that is whole keeps its decoder's reason (a codec or format problem).
"""

from __future__ import annotations

from typing import NamedTuple

from avpenet.errors import UndecodableMedia
from avpenet.features import media

# A real header has a handful of chunks before its samples; past this many a walk stops (an upload of
# thousands of empty chunks costs no more) and the file is not called cut.
MAX_CHUNKS = 64
# Bytes of an AMR frame after its table-of-contents byte, by frame type (3GPP TS 26.101 / 26.201; the
# reserved types and NO_DATA carry none).
AMR_NB_FRAME = (12, 13, 15, 17, 19, 20, 26, 31, 5, 0, 0, 0, 0, 0, 0, 0)
AMR_WB_FRAME = (17, 23, 32, 36, 40, 46, 50, 58, 60, 5, 0, 0, 0, 0, 0, 0)
W64_DATA = b"data" + media.W64_WAVE[4:]  # Wave64's chunk GUIDs share their last 12 bytes
W64_FMT = b"fmt " + media.W64_WAVE[4:]


class _Chunks(NamedTuple):
    """How a chunked container lays out its chunks: an id, then a size of `size_bytes`."""

    start: int  # where the first chunk starts
    id_bytes: int
    size_bytes: int
    order: str  # the sizes' byte order
    samples: bytes  # the id of the chunk holding the samples
    form: bytes  # the id of the chunk describing them (format, channels, rate): it may come after them
    align: int = 2  # chunks start at a multiple of this (a pad byte after an odd size)
    size_counts_header: bool = False  # Wave64: a chunk's size includes its id and size
    open_ended: int = -1  # a size meaning "to the end of the file" (a recording not finalised)
    table: bytes = b""  # CAF's packet table: needed when its packets vary in size, and FFmpeg writes it last


LAYOUTS = {
    "wav": _Chunks(12, 4, 4, "little", b"data", b"fmt ", open_ended=0xFFFFFFFF),  # RF64: size in ds64
    "aiff": _Chunks(12, 4, 4, "big", b"SSND", b"COMM"),
    # open_ended -1: CAF's "size unknown"
    "caf": _Chunks(8, 4, 8, "big", b"data", b"desc", align=1, open_ended=2**64 - 1, table=b"pakt"),
    "w64": _Chunks(40, 16, 8, "little", W64_DATA, W64_FMT, align=8, size_counts_header=True),
}


def cut(kind: str) -> UndecodableMedia:
    """The refusal of a file of an audio type that decodes no sample: it declares audio, so it is broken,
    never "no audio" (which would score a clip on the face alone)."""
    return UndecodableMedia(
        f"{media.describe(kind)} declares audio but no sample decodes: it is corrupt or truncated; "
        "send the complete recording"
    )


def cut_short(source: media.Source, kind: str) -> bool:
    """Whether the file ends inside its own structure: before the chunk of its samples (one of `LAYOUTS`)
    is whole (what follows it is not looked at), inside FLAC's metadata blocks, or before an AMR's first
    frame is whole. Kinds without such a structure here (Ogg, MP3, AAC) are never called cut."""
    data = media.as_file(source).getvalue()
    if kind in LAYOUTS:
        return _chunks_cut(data, LAYOUTS[kind])
    if kind == "flac":
        return _flac_cut(data)
    if kind == "amr":
        return _amr_cut(data)
    return False


def description_cut(source: media.Source, kind: str) -> bool:
    """Whether the file ends before the chunk describing its samples (`_Chunks.form`: rate, channels,
    length) is whole. A decoder still reads a rate from the bytes left (libsndfile reads an AIFF cut inside
    a COMM chunk that follows its samples as 1 Hz), so a limit refused from that header is the cut's doing,
    not the sender's recording: `sfaudio` refuses it as cut. A whole description keeps its refusal (a CAF
    at 4000 Hz cut mid-upload is refused for its rate, which no complete upload would fix)."""
    layout = LAYOUTS.get(kind)
    if layout is None:
        return False
    data = media.as_file(source).getvalue()
    at, header = layout.start, layout.id_bytes + layout.size_bytes
    for _ in range(MAX_CHUNKS):
        if at + header > len(data):
            return True  # ended before the description (or inside a chunk's id and size)
        size = int.from_bytes(data[at + layout.id_bytes : at + header], layout.order)
        if size == layout.open_ended or (layout.size_counts_header and size < header):
            return False
        end = at + size + (0 if layout.size_counts_header else header)
        if data[at : at + layout.id_bytes] == layout.form or end > len(data):
            return end > len(data)
        at = end + (-end % layout.align)
    return False


def _chunks_cut(data: bytes, layout: _Chunks) -> bool:
    """Cut when the file ends before its samples' chunk and the chunk describing them are whole (AIFF allows
    COMM after SSND). The walk stops once both are (a CAF whose packets vary in size goes on to its packet
    table, which FFmpeg writes after the samples): bytes after them (a few junk bytes, a LIST or id3 chunk
    cut short) are no cut, and a whole file with them keeps its decoder's reason."""
    at, found, described, table_due = layout.start, False, False, False
    header = layout.id_bytes + layout.size_bytes
    for _ in range(MAX_CHUNKS):
        if at >= len(data):
            return not (found and described)  # ended between chunks: cut when before either
        if at + header > len(data):
            return True
        ident = data[at : at + layout.id_bytes]
        size = int.from_bytes(data[at + layout.id_bytes : at + header], layout.order)
        if size == layout.open_ended or (layout.size_counts_header and size < header):
            return False  # runs to the end of the file; or a Wave64 size no chunk can have
        end = at + size + (0 if layout.size_counts_header else header)
        if end > len(data):
            return True
        if layout.table and ident == b"desc":
            table_due = _varying_packets(data[at + header : end])
        table_due = table_due and ident != layout.table
        found = found or ident == layout.samples
        described = described or ident == layout.form
        if found and described and not table_due:
            return False
        at = end + (-end % layout.align)
    return False


def _varying_packets(desc: bytes) -> bool:
    """A CAF `desc` (rate, format, flags, bytes per packet, frames per packet...) whose packets vary in size
    or length (a 0 there, as ALAC's and AAC's): their sizes are in a `pakt` chunk the file needs."""
    return len(desc) >= 24 and bytes(4) in (desc[16:20], desc[20:24])


def _flac_cut(data: bytes) -> bool:
    """Cut inside the metadata blocks (STREAMINFO, seek table, padding...) before the last one ends."""
    at = 4  # after "fLaC"
    for _ in range(MAX_CHUNKS):
        if at + 4 > len(data):
            return True
        last, size = data[at] & 0x80, int.from_bytes(data[at + 1 : at + 4], "big")
        at += 4 + size
        if at > len(data):
            return True
        if last:
            return False
    return False


def _amr_cut(data: bytes) -> bool:
    """Cut before the first frame after the "#!AMR" header is whole (an AMR has no other header)."""
    wideband = data.startswith(b"#!AMR-WB\n")
    at = 9 if wideband else 6
    if at >= len(data):
        return True
    frame = (AMR_WB_FRAME if wideband else AMR_NB_FRAME)[(data[at] >> 3) & 0x0F]
    return at + 1 + frame > len(data)
