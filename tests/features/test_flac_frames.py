"""FLAC as uploads come: written to a pipe by a streaming encoder (its length left unknown), followed by a
tag, or hostile bytes that pass for frames: decoded whole and held to the limit, called cut only when the
frames end early, and never at unbounded CPU cost."""

from __future__ import annotations

import numpy as np
import pytest
from support import testmedia as tm

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia
from avpenet.features import audio, sfaudio, truncation

SR = contract.SAMPLE_RATE
CUT = (
    "FLAC file declares audio but no sample decodes: it is corrupt or truncated; send the complete recording"
)
ID3V1 = b"TAG" + b"a title".ljust(30, b"\0") + bytes(95)


def _with_total(flac: bytes, total: int) -> bytes:
    """`flac` with STREAMINFO's total samples (its last 36 bits at bytes 21-25) set to `total`."""
    field = (int.from_bytes(flac[21:26], "big") & ~0xFFFFFFFFF) | total
    return flac[:21] + field.to_bytes(5, "big") + flac[26:]


def _apev2(header: bool) -> bytes:
    """An APEv2 tag of one item (a footer; a header before it when `header`), as taggers append one."""
    item = (5).to_bytes(4, "little") + bytes(4) + b"Title\0" + b"hello"
    size = (len(item) + 32).to_bytes(4, "little")

    def part(flags: int) -> bytes:
        return (
            b"APETAGEX"
            + (2000).to_bytes(4, "little")
            + size
            + (1).to_bytes(4, "little")
            + (flags.to_bytes(4, "little") + bytes(8))
        )

    return (part(0xA0000000) if header else b"") + item + part(0x80000000 if header else 0)


def test_a_flac_a_streaming_encoder_wrote_to_a_pipe_decodes_whole():
    """STREAMINFO's total 0 (unknown) reads as 2^63 - 1 frames in libsndfile: a 3-s clip was refused 413
    "audio lasts 576460752303423.5 s". It decodes whole, as the same frames declaring their total do (the
    last read is not lost to libsndfile's failed seek to an unknown end)."""
    piped = tm.piped_flac_bytes(tm.tone(3.0, SR), SR)
    assert int.from_bytes(piped[21:26], "big") & 0xFFFFFFFFF == 0
    wave = audio.load_audio(piped, max_seconds=20.0)
    assert wave.size == 3 * SR
    np.testing.assert_array_equal(wave, audio.load_audio(_with_total(piped, 3 * SR), max_seconds=20.0))
    assert sfaudio.read(piped, "flac", 20.0)[2] == 0  # no length declared


def test_a_flac_of_unknown_length_is_held_to_the_limit_as_it_decodes():
    """Refused once its decoded length passes the limit and its grace (as FFmpeg's decoding is); within
    the grace it is cut to the limit."""
    with pytest.raises(TooLarge, match=r"^audio lasts over 20\.5 s; the limit is 20 s$"):
        audio.load_audio(tm.piped_flac_bytes(tm.tone(30.0, SR), SR), max_seconds=20.0)
    wave = audio.load_audio(tm.piped_flac_bytes(tm.tone(20.3, SR), SR), max_seconds=20.0)
    assert wave.size == 20 * SR


def test_a_flac_of_unknown_length_cut_mid_upload_keeps_its_decoded_start():
    piped = tm.piped_flac_bytes(tm.tone(4.0, SR), SR)
    whole = audio.load_audio(piped)
    wave = audio.load_audio(piped[: len(piped) * 6 // 10])
    assert 1.4 * SR < wave.size < 2.5 * SR  # at most one read of the tail is lost
    np.testing.assert_array_equal(wave, whole[: wave.size])
    with pytest.raises(UndecodableMedia, match="^FLAC file declares audio but no sample decodes"):
        audio.load_audio(piped[:3000])


def test_a_run_of_sync_codes_after_streaminfo_costs_a_bounded_number_of_header_checks(monkeypatch):
    """256 KB of `FF F8 7D 08 FE` (each a sync code and a header that fails only its CRC-8) had every one
    checked bit by bit, 1.2 s of CPU a request; at most MAX_FLAC_HEADERS are now, and the file keeps
    libsndfile's reason (it is not called cut)."""
    flac = tm.audio_bytes(tm.tone(1.0, SR), SR, "FLAC")
    hostile = flac[: flac.index(b"\xff\xf8")] + b"\xff\xf8\x7d\x08\xfe" * 52_500
    checked = []
    real = truncation._frame_header
    monkeypatch.setattr(truncation, "_frame_header", lambda *a: checked.append(a[1]) or real(*a))
    with pytest.raises(UndecodableMedia, match=r"^FLAC file cannot be decoded \(flac decoder lost sync\)"):
        audio.load_audio(hostile)
    assert 0 < len(checked) <= truncation.MAX_FLAC_HEADERS


def test_the_header_crc8_table_matches_the_polynomial():
    data = bytes(range(256)) + b"\xff\xf8\x69\x08\x00\x00"
    for n in range(len(data)):
        assert truncation._crc8(data[:n]) == truncation._crc(data[:n], 8, 0x07)


@pytest.mark.parametrize(
    "tag",
    [ID3V1, _apev2(header=False), _apev2(header=True), _apev2(header=True) + ID3V1],
    ids=["id3v1", "apev2", "apev2-header", "apev2-id3v1"],
)
def test_a_whole_damaged_flac_followed_by_a_tag_keeps_libsndfiles_reason(tag):
    """An ID3v1 or APEv2 tag after the last frame was taken for a cut frame: "corrupt or truncated"."""
    flac = bytearray(tm.audio_bytes(tm.tone(0.5, SR), SR, "FLAC"))
    at = flac.index(b"\xff\xf8") + 200
    flac[at : at + 16] = bytes(b ^ 0x5A for b in flac[at : at + 16])
    with pytest.raises(UndecodableMedia, match=r"FLAC file cannot be decoded \(flac decoder lost sync\)"):
        audio.load_audio(bytes(flac) + tag)
    assert audio.load_audio(tm.audio_bytes(tm.tone(0.5, SR), SR, "FLAC") + tag).size == SR // 2
    with pytest.raises(UndecodableMedia) as err:  # cut short, a tag after it does not make it whole
        audio.load_audio(bytes(flac[: len(flac) - 40]) + tag)
    assert str(err.value) == CUT
