"""Bound an MP4/MOV's sample tables before FFmpeg builds its index from them.

FFmpeg's mov demuxer sizes its per-track index (24+ bytes per sample) from counts in the file: `stsz`
sample counts, `stts`/`ctts` run lengths, `trun` sample counts. A few KB can claim tens of millions of samples
(with a huge `mdhd` timescale the claimed duration stays tiny, so no duration check catches it), and opening
such a file took gigabytes. This walker reads only box headers and counts, so it costs microseconds and no
allocation, and refuses before `av.open`:

- a table whose entry count needs more bytes than its box holds (truncated or forged) → UndecodableMedia
  (422); more tracks or edit-list entries than a recording has (FFmpeg's work grows with both) → 422;
- constant-size samples whose total size exceeds the file (each sample's data must be in the upload) → 422;
- more samples in a track than `max_seconds` × the per-second bound of its kind allows → TooLarge (413): coded
  video frames (240/s), compressed audio frames (1000/s; Opus packets of 2.5 ms are 400/s), uncompressed audio
  (up to the highest accepted sample rate; FFmpeg indexes such tracks per chunk, not per sample).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"moof", b"traf", b"mvex"}
# Tables laid out as version/flags, a 32-bit entry count, then fixed-size entries: bytes per entry.
COUNTED_TABLES = {b"stts": 8, b"ctts": 8, b"stsc": 12, b"stco": 4, b"co64": 8, b"stss": 4, b"stps": 4}
MAX_BOXES = 200_000  # a real clip has hundreds; walking is bounded whatever the file claims
MAX_TRACKS = 16  # = media.MAX_STREAMS: phones and cameras write 2-6 (video, audio, timecode, metadata)
# FFmpeg rebuilds a track's index once per edit-list entry: 100k edits of a 400-frame clip (1.2 MB) took
# 14.5 s and 1.45 GB. Recordings have 1-2 entries; editors write a handful.
MAX_EDITS = 64
MAX_DEPTH = 8
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class SampleBounds:
    """How many samples per second of media a track may claim, and the longest media accepted."""

    max_seconds: float = 600.0
    video_per_second: int = 240
    audio_frames_per_second: int = 1000
    pcm_per_second: int = contract.AUDIO_MAX_INPUT_RATE


@dataclass
class _Track:
    handler: bytes = b""
    track_id: int = 0
    stts_entries: int = 0
    stts_samples: int = 0
    stts_first_delta: int = 0
    ctts_samples: int = 0
    sample_size: int = 0
    sample_count: int = 0
    fragment_samples: int = 0


@dataclass
class _Walk:
    data: memoryview
    tracks: list[_Track] = field(default_factory=list)
    fragments: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # track_id -> trun samples
    fragment_track: int = 0
    boxes: int = 0


def check_sample_tables(
    source: str | os.PathLike | bytes | bytearray | memoryview, bounds: SampleBounds
) -> None:
    """Raise UndecodableMedia / TooLarge when an ISO-BMFF file's sample tables cannot be real (module doc)."""
    if isinstance(source, bytes | bytearray | memoryview):
        _check(memoryview(source), bounds)
        return
    with open(Path(source), "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise UndecodableMedia("MP4/MOV container is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                _check(view, bounds)
            finally:
                view.release()


def _check(data: memoryview, bounds: SampleBounds) -> None:
    walk = _Walk(data)
    _walk(walk, 0, len(data), 0)
    if len(walk.tracks) > MAX_TRACKS:
        raise UndecodableMedia(
            f"MP4/MOV container has {len(walk.tracks)} tracks; a recording has at most {MAX_TRACKS}"
        )
    for track in walk.tracks:
        track.fragment_samples = walk.fragments.get(track.track_id, 0)
        _check_track(track, len(data), bounds)


def _walk(walk: _Walk, start: int, end: int, depth: int) -> None:
    pos = start
    while pos + 8 <= end:
        walk.boxes += 1
        if walk.boxes > MAX_BOXES:
            raise UndecodableMedia(f"MP4/MOV container has over {MAX_BOXES:,} boxes; it is not a recording")
        size, kind = _U32.unpack_from(walk.data, pos)[0], bytes(walk.data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size, header = struct.unpack_from(">Q", walk.data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise UndecodableMedia(f"MP4/MOV box {_name(kind)} declares an impossible size {size}")
        stop = min(pos + size, end)  # a box running past its parent is cut short (a truncated upload)
        _visit(walk, kind, pos + header, stop, depth)
        pos += size


def _visit(walk: _Walk, kind: bytes, start: int, stop: int, depth: int) -> None:
    if kind in CONTAINERS:
        if depth >= MAX_DEPTH:
            raise UndecodableMedia("MP4/MOV boxes are nested deeper than any recording's")
        if kind == b"trak":
            walk.tracks.append(_Track())
        _walk(walk, start, stop, depth + 1)
        return
    track = walk.tracks[-1] if walk.tracks else None
    body = walk.data[start:stop]
    if kind in COUNTED_TABLES:
        count = _entries(kind, body, 4, COUNTED_TABLES[kind])
        if track is not None and kind in (b"stts", b"ctts"):
            runs = [_U32.unpack_from(body, 8 + 8 * i)[0] for i in range(count)]
            if kind == b"stts":
                track.stts_entries, track.stts_samples = count, sum(runs)
                track.stts_first_delta = _U32.unpack_from(body, 12)[0] if count else 0
            else:
                track.ctts_samples = sum(runs)
    elif kind == b"stsz":
        _stsz(kind, body, track)
    elif kind == b"stz2":
        _need(kind, body, 12)
        bits, count = body[7], _U32.unpack_from(body, 8)[0]
        _fits(kind, count, count * bits / 8, len(body) - 12)
        if track is not None:
            track.sample_count = count
    elif kind == b"elst":
        _need(kind, body, 8)
        edits = _entries(kind, body, 4, 20 if body[0] == 1 else 12)
        if edits > MAX_EDITS:
            raise UndecodableMedia(
                f"MP4/MOV edit list has {edits:,} entries; a recording has at most {MAX_EDITS}"
            )
    elif kind == b"hdlr" and track is not None and not track.handler and len(body) >= 12:  # mdia, not minf
        track.handler = bytes(body[8:12])
    elif kind == b"tkhd" and track is not None and len(body) >= 24:
        track.track_id = _U32.unpack_from(body, 20 if body[0] == 1 else 12)[0]
    elif kind == b"tfhd" and len(body) >= 8:
        walk.fragment_track = _U32.unpack_from(body, 4)[0]
    elif kind == b"trun":
        walk.fragments[walk.fragment_track] += _trun(kind, body)


def _stsz(kind: bytes, body: memoryview, track: _Track | None) -> None:
    _need(kind, body, 12)
    size, count = _U32.unpack_from(body, 4)[0], _U32.unpack_from(body, 8)[0]
    if size == 0:
        _fits(kind, count, count * 4, len(body) - 12)
    if track is not None:
        track.sample_size, track.sample_count = size, count


def _trun(kind: bytes, body: memoryview) -> int:
    _need(kind, body, 8)
    flags, count = int.from_bytes(body[1:4], "big"), _U32.unpack_from(body, 4)[0]
    fixed = 8 + 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)
    per_sample = 4 * sum(bool(flags & bit) for bit in (0x100, 0x200, 0x400, 0x800))
    _fits(kind, count, count * per_sample, len(body) - fixed)
    return count


def _entries(kind: bytes, body: memoryview, at: int, entry_bytes: int) -> int:
    _need(kind, body, at + 4)
    count = _U32.unpack_from(body, at)[0]
    _fits(kind, count, count * entry_bytes, len(body) - at - 4)
    return count


def _need(kind: bytes, body: memoryview, size: int) -> None:
    if len(body) < size:
        raise UndecodableMedia(f"MP4/MOV {_name(kind)} box is cut short: the file is truncated or corrupt")


def _fits(kind: bytes, count: int, needed: float, available: int) -> None:
    if needed > available:
        raise UndecodableMedia(
            f"MP4/MOV {_name(kind)} table claims {count:,} entries but holds {max(available, 0):,} bytes: "
            "the file is truncated or forged"
        )


def _check_track(track: _Track, file_size: int, bounds: SampleBounds) -> None:
    samples = max(track.sample_count, track.stts_samples, track.ctts_samples) + track.fragment_samples
    audio = track.handler == b"soun"
    # FFmpeg indexes uncompressed audio per chunk when stts is one run of 1-tick samples (constant size).
    per_chunk = audio and track.sample_size > 0 and track.stts_entries == 1 and track.stts_first_delta == 1
    if track.sample_size > 0 and not per_chunk and track.sample_count * track.sample_size > file_size:
        raise UndecodableMedia(
            f"MP4/MOV track claims {track.sample_count:,} samples of {track.sample_size:,} bytes, more data "
            f"than the {file_size:,}-byte file holds: it is truncated or forged"
        )
    if per_chunk:
        rate, what = bounds.pcm_per_second, "audio samples"
    elif audio:
        rate, what = bounds.audio_frames_per_second, "audio frames"
    else:
        rate, what = bounds.video_per_second, "samples"
    limit = int(bounds.max_seconds * rate)
    if samples > limit:
        raise TooLarge(
            f"MP4/MOV track claims {samples:,} {what}; at most {limit:,} fit the {bounds.max_seconds:.0f} s "
            f"limit ({rate:,} per second)"
        )


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def declared_seconds(data: bytes | bytearray | memoryview) -> float | None:
    """The duration an MP4/MOV's movie header (`moov/mvhd`) declares, or None when it declares none.

    Reads two levels of box headers (microseconds, no allocation) so a caller can size a request's cost
    before decoding it. It is the file's own claim: the decoder still measures and bounds the real length.
    """
    view = memoryview(data)
    moov = _child(view, 0, len(view), b"moov")
    mvhd = None if moov is None else _child(view, moov[0], moov[1], b"mvhd")
    if mvhd is None:
        return None
    body = view[mvhd[0] : mvhd[1]]
    long = len(body) >= 1 and body[0] == 1  # version 1: 64-bit times and duration
    if len(body) < (32 if long else 20):
        return None
    timescale = _U32.unpack_from(body, 20 if long else 12)[0]
    duration = struct.unpack_from(">Q", body, 24)[0] if long else _U32.unpack_from(body, 16)[0]
    if timescale == 0 or duration in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):  # all ones: "unknown"
        return None
    return duration / timescale


def _child(data: memoryview, start: int, end: int, wanted: bytes) -> tuple[int, int] | None:
    """(body start, body end) of the first `wanted` box in [start, end); at most 64 boxes looked at."""
    pos = start
    for _ in range(64):
        if pos + 8 > end:
            return None
        size, kind = _U32.unpack_from(data, pos)[0], bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > end:
                return None
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return None
        if kind == wanted:
            return pos + header, min(pos + size, end)
        pos += size
    return None
