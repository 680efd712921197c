"""`mp4index.declared_seconds`: the movie header's duration, read from box headers only (what admission
charges a clip before decoding it); None whenever the file does not declare one."""

from __future__ import annotations

import struct

from avpenet.features.mp4index import declared_seconds


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def mvhd_v0(timescale: int, duration: int) -> bytes:
    return box(b"mvhd", b"\x00\x00\x00\x00" + struct.pack(">IIII", 0, 0, timescale, duration) + bytes(80))


def mvhd_v1(timescale: int, duration: int) -> bytes:
    return box(b"mvhd", b"\x01\x00\x00\x00" + struct.pack(">QQIQ", 0, 0, timescale, duration) + bytes(80))


FTYP = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2")


def test_both_header_versions_are_read():
    assert declared_seconds(FTYP + box(b"moov", mvhd_v0(1000, 4200))) == 4.2
    assert declared_seconds(FTYP + box(b"free", bytes(16)) + box(b"moov", mvhd_v1(90000, 90000 * 61))) == 61.0


def test_no_or_unknown_duration_is_none():
    assert declared_seconds(FTYP + box(b"moov", mvhd_v0(1000, 0))) is None  # fragmented files: 0
    assert declared_seconds(FTYP + box(b"moov", mvhd_v0(1000, 0xFFFFFFFF))) is None  # "unknown"
    assert declared_seconds(FTYP + box(b"moov", mvhd_v0(0, 5))) is None  # no timescale
    assert declared_seconds(FTYP + box(b"mdat", bytes(64))) is None  # no movie header
    assert declared_seconds(FTYP + box(b"moov", mvhd_v0(1000, 4200))[:30]) is None  # truncated
    assert declared_seconds(b"\x00\x00\x00\x01moov" + b"\x00" * 4) is None  # 64-bit size cut off
    assert declared_seconds(b"") is None
