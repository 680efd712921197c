"""The chunks of a chunked audio file (WAV/RF64, AIFF, CAF, Wave64), walked by one rule.

Whether such a file that decodes nothing was cut inside its header (`truncation`) and which codec a WAV's or
Wave64's `fmt ` chunk names (`wavcodec`) read the same chunks: one walk, with one bound on how many chunks it
reads and one reading of their sizes, serves both, so they cannot disagree on where a chunk lies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from avpenet.features import media

# A real header has a handful of chunks before its samples; past this many a walk stops (an upload of
# thousands of empty chunks costs no more) and the file is not called cut.
MAX_CHUNKS = 64
W64_DATA = b"data" + media.W64_WAVE[4:]  # Wave64's chunk GUIDs share their last 12 bytes
W64_FMT = b"fmt " + media.W64_WAVE[4:]
# An RF64 (EBU Tech 3306) starts "RF64", size 0xFFFFFFFF, "WAVE", then a `ds64` chunk whose 64-bit fields hold
# the sizes a 32-bit field cannot: the RIFF's, then the `data` chunk's (0xFFFFFFFF in its own header).
RF64_DATA_SIZE = slice(28, 36)


class Layout(NamedTuple):
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
    lead: int = 0  # bytes between the samples' chunk header and its samples (CAF's edit count)


LAYOUTS = {
    "wav": Layout(12, 4, 4, "little", b"data", b"fmt ", open_ended=0xFFFFFFFF),  # RF64: `_size`
    "aiff": Layout(12, 4, 4, "big", b"SSND", b"COMM"),
    # open_ended -1: CAF's "size unknown"
    "caf": Layout(8, 4, 8, "big", b"data", b"desc", align=1, open_ended=2**64 - 1, table=b"pakt", lead=4),
    "w64": Layout(40, 16, 8, "little", W64_DATA, W64_FMT, align=8, size_counts_header=True),
}


class Chunk(NamedTuple):
    """A chunk `walk` reached."""

    ident: bytes | memoryview  # empty where the data ends inside or before its id and size: the walk's last
    at: int  # where its id starts
    body: int  # where its body starts, after its id and size
    end: int  # where its body ends by its size (`_size`): past the data's end when the chunk is cut short
    open_ended: bool  # runs to the end of the file, or a Wave64 size no chunk can have: the walk's last


def walk(data: bytes | memoryview, layout: Layout) -> Iterator[Chunk]:
    """The chunks of `data` (a view of the upload: nothing is copied), the first MAX_CHUNKS of them. After
    a chunk cut short the next one starts past the data's end: the walk ends there with an empty id."""
    at, header = layout.start, layout.id_bytes + layout.size_bytes
    for _ in range(MAX_CHUNKS):
        if at + header > len(data):
            yield Chunk(b"", at, at + header, at + header, False)
            return
        size = _size(data, layout, at)
        end = at + size + (0 if layout.size_counts_header else header)
        open_ended = size == layout.open_ended or end < at + header  # Wave64: a size under its own header's
        yield Chunk(data[at : at + layout.id_bytes], at, at + header, end, open_ended)
        if open_ended:
            return
        at = end + (-end % layout.align)


def _size(data: bytes | memoryview, layout: Layout, at: int) -> int:
    """The size of the chunk at `at` (its header within `data`). An RF64's `data` chunk says 0xFFFFFFFF and
    keeps its size in the `ds64` chunk first after the header (whole: the walk went past it), so one cut just
    after its data chunk header is called cut, as a WAV is (libsndfile read no frame and no size, and called
    it "an empty recording"); a ds64 size of 0 (a recording not finalised) runs to the end of the file."""
    size = int.from_bytes(data[at + layout.id_bytes : at + layout.id_bytes + layout.size_bytes], layout.order)
    rf64 = data[:4] == b"RF64" and data[12:16] == b"ds64" and layout is LAYOUTS["wav"]
    if rf64 and size == 0xFFFFFFFF and data[at : at + 4] == b"data":
        return int.from_bytes(data[RF64_DATA_SIZE], "little") or size
    return size
