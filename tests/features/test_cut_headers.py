"""A recording cut inside its header (an upload that stopped early) is refused 422 with the wording an Ogg cut
in its headers gets: "declares audio but no sample decodes: it is corrupt or truncated; send the complete
recording". Before, a CAF got FFmpeg's "could not be opened: Invalid data found when processing input", an
AIFF, Wave64, WAV or FLAC libsndfile's reason for the bytes left ("Channel count is zero", "No 'data' chunk
marker", "holds no audio samples (an empty recording)"), an AMR "corrupt or truncated: Invalid data found":
each sent the sender after a format or codec problem that is not there. A whole file with a real problem
keeps its reason.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from support import testmedia as tm

from avpenet import contract
from avpenet.errors import UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, media

SR = contract.SAMPLE_RATE
CUT = "{} declares audio but no sample decodes: it is corrupt or truncated; send the complete recording"
W64_DATA = bytes.fromhex("64617461f3acd3118cd100c04f8edb8a")  # the GUID of Wave64's `data` chunk
W64_FMT = b"fmt " + W64_DATA[4:]  # Wave64's chunk GUIDs share their last 12 bytes


def _tone(fmt: str, subtype: str | None = None) -> bytes:
    return tm.audio_bytes(tm.tone(1.0, SR), SR, fmt, subtype)


# name -> (a whole recording, what the refusals call it, where its header ends: its sample chunk's header (a
# CAF's edit count after it is read as audio by FFmpeg); for AMR the end of its first frame; FFmpeg's ALAC CAF
# needs its packet table, after the audio: its header)
RECORDINGS = {
    "CAF-PCM_16": (lambda: _tone("CAF"), "CAF file", lambda d: d.index(b"data") + 12),
    "CAF-ALAC_16": (lambda: _tone("CAF", "ALAC_16"), "CAF file", lambda d: d.index(b"data") + 12),
    "CAF-IMA4": (
        lambda: tm.caf_bytes("adpcm_ima_qt", tm.tone(1.0, SR), SR),
        "CAF file",
        lambda d: d.index(b"data") + 12,
    ),
    "CAF-ALAC-ffmpeg": (
        lambda: tm.caf_bytes("alac", tm.tone(1.0, SR), SR),
        "CAF file",
        lambda d: d.index(b"pakt") + 12,
    ),
    "AIFF": (lambda: _tone("AIFF"), "AIFF file", lambda d: d.index(b"SSND") + 16),
    "AIFF-C": (lambda: _tone("AIFF", "FLOAT"), "AIFF file", lambda d: d.index(b"SSND") + 16),
    "W64": (lambda: _tone("W64"), "Wave64 file", lambda d: d.index(W64_DATA) + 24),
    "WAV": (lambda: _tone("WAV"), "WAV file", lambda d: d.index(b"data") + 8),
    # its data chunk's size is in its ds64 chunk: cut up to inside its first sample
    "RF64": (lambda: _tone("RF64"), "WAV file", lambda d: d.index(b"data") + 10),
    "FLAC": (lambda: _tone("FLAC"), "FLAC file", lambda d: d.index(b"\xff\xf8")),  # the first frame's sync
    "AMR-NB": (lambda: tm.amr_nb_bytes(tm.tone(1.0, 8000)), "AMR file", lambda d: 6 + 32),  # 12.2 kbit/s
    "AMR-WB": (lambda: tm.amr_wb_bytes(50), "AMR file", lambda d: 9 + 61),  # 23.85 kbit/s
}


def _header_cuts(data: bytes, end: int) -> list[bytes]:
    """About 30 cuts of `data` from the first one sniffed as its kind to the end of its header."""
    start = next(n for n in range(1, len(data)) if media.sniff(data[:n]) is not None)
    return [data[:n] for n in sorted({*range(start, end, max(1, (end - start) // 30)), end - 1})]


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_recording_cut_inside_its_header_is_refused_as_cut(name, monkeypatch):
    make, what, header_end = RECORDINGS[name]
    data = make()
    cuts = _header_cuts(data, header_end(data))
    unraisable = []  # what Python printed to stderr: an exception raised inside soundfile's callbacks
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    reasons = set()
    for cut in cuts:
        with pytest.raises(UndecodableMedia) as err:
            audio.load_audio(cut)
        reasons.add(str(err.value))
    # was e.g. "CAF file could not be opened: Invalid data found when processing input"
    assert reasons == {CUT.format(what)}, f"{len(cuts)} cuts"
    assert not unraisable  # libsndfile's AIFF reader seeks before the start: no traceback in the log


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "ULAW"])
def test_a_caf_cut_inside_the_edit_count_after_its_data_header_decodes_no_bogus_sample(subtype):
    """The 4-byte edit count after a CAF's `data` chunk header is no audio: cut inside it, FFmpeg decoded a
    sample or three of those bytes (0; -0.98 for mu-law) and the file was scored as sound."""
    caf = _tone("CAF", subtype)
    samples = caf.index(b"data") + 12 + 4
    for end in range(samples - 4, samples):
        with pytest.raises(UndecodableMedia) as err:
            audio.load_audio(caf[:end])
        assert str(err.value) == CUT.format("CAF file"), end - samples
    assert audio.load_audio(caf[: samples + 4 * 2]).size  # two 16-bit (or 24-bit) samples or more: kept


def test_a_caf_of_varying_packets_ending_at_its_data_chunk_is_called_cut():
    """FFmpeg writes an ALAC CAF's packet table after its samples; the file cut just before it ended
    between two chunks and was not called cut: "could not be opened: Invalid data found"."""
    caf = tm.caf_bytes("alac", tm.tone(1.0, SR), SR)
    with pytest.raises(UndecodableMedia) as err:
        audio.load_audio(caf[: caf.index(b"pakt")])
    assert str(err.value) == CUT.format("CAF file")


def test_an_rf64_cut_just_after_its_data_chunk_header_is_called_cut():
    """An RF64's data chunk header says 0xFFFFFFFF: the chunk's size is in its ds64 chunk. Cut just after
    that header or inside its first sample, it was "WAV file holds no audio samples (an empty recording)"."""
    rf64 = _tone("RF64")
    samples = rf64.index(b"data") + 8
    for end in (samples, samples + 1):
        with pytest.raises(UndecodableMedia) as err:
            audio.load_audio(rf64[:end])
        assert str(err.value) == CUT.format("WAV file"), end - samples
    assert audio.load_audio(rf64[: samples + 2]).size == 1  # one 16-bit sample: kept
    with pytest.raises(UndecodableMedia, match=r"WAV file holds no audio samples \(an empty recording\)"):
        audio.load_audio(tm.audio_bytes(np.zeros(0, np.float32), SR, "RF64"))  # a whole one is still empty


def _flac_frame_starts(flac: bytes) -> list[int]:
    """Where the frames of a FLAC written by libsndfile start (a sync code, then a fixed-blocksize frame
    number byte: 0, 1, 2...)."""
    starts, at = [], flac.index(b"\xff\xf8")
    while at >= 0:
        if flac[at + 4] == len(starts):
            starts.append(at)
        at = flac.find(b"\xff\xf8", at + 1)
    return starts


def test_a_flac_cut_inside_its_first_read_is_refused_as_cut():
    """A FLAC cut after its metadata, inside a frame or between two (1 s at 16 kHz: within libsndfile's
    first read, so no sample is kept), was refused with libsndfile's "flac decoder lost sync" or "Internal
    psf_fseek() failed"; it is now refused as cut, as a FLAC cut inside its metadata is."""
    flac = _tone("FLAC")
    frames = _flac_frame_starts(flac)
    assert len(frames) == 4  # 4096 samples a frame
    ends = {*frames, *range(frames[0] + 1, len(flac), 97), frames[1] - 1, frames[1] + 1, len(flac) - 1}
    for end in sorted(ends):
        with pytest.raises(UndecodableMedia) as err:
            audio.load_audio(flac[:end])
        assert str(err.value) == CUT.format("FLAC file"), end - frames[0]
    assert audio.load_audio(flac).size == SR  # whole, it decodes


def test_a_whole_flac_whose_first_frame_is_damaged_keeps_libsndfiles_reason():
    """Only a FLAC that ends early is called cut: one whole but damaged in its first frame keeps
    libsndfile's reason."""
    flac = bytearray(tm.audio_bytes(tm.tone(0.5, SR), SR, "FLAC"))
    at = flac.index(b"\xff\xf8") + 200
    flac[at : at + 16] = bytes(b ^ 0x5A for b in flac[at : at + 16])
    with pytest.raises(UndecodableMedia, match=r"FLAC file cannot be decoded \(flac decoder lost sync\)"):
        audio.load_audio(bytes(flac))


def _patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def _caf(fmt_bytes: bytes = b"lpcm", bytes_per_packet: bytes = b"\x00\x00\x00\x02") -> bytes:
    """A whole CAF whose `desc` chunk (rate, format id, flags, bytes per packet...) is changed."""
    caf = tm.audio_bytes(tm.tone(1.0, SR), SR, "CAF")
    at = caf.index(b"lpcm")
    return _patched(_patched(caf, at, fmt_bytes), at + 8, bytes_per_packet)


@pytest.mark.parametrize(
    ("make", "error", "reason"),
    [
        (
            lambda: _caf(bytes_per_packet=bytes(4)),
            UndecodableMedia,
            "CAF file could not be opened: Invalid data",
        ),
        (
            lambda: _caf(fmt_bytes=b"zzzz"),
            UnsupportedMedia,
            "the audio codec in this CAF file is not supported",
        ),
        (
            lambda: _patched(
                aifc := tm.audio_bytes(tm.tone(1.0, SR), SR, "AIFF", "FLOAT"), aifc.index(b"FL32"), b"ZZZZ"
            ),
            UndecodableMedia,
            r"AIFF file cannot be decoded \(File contains data in an unimplemented format\)",
        ),
        (
            lambda: _patched(tm.audio_bytes(tm.tone(1.0, SR), SR, "W64"), 66, bytes(2)),  # fmt: tag, channels
            UndecodableMedia,
            r"Wave64 file cannot be decoded \(Channel count is zero\)",
        ),
        (  # cut mid-upload, but its rate is what no complete upload would fix
            lambda: tm.audio_bytes(tm.tone(1.0, 4000), 4000, "CAF")[:5000],
            UndecodableMedia,
            "CAF file declares a sample rate of 4000 Hz",
        ),
    ],
    ids=[
        "caf-unreadable-format",
        "caf-unknown-codec",
        "aifc-unknown-compression",
        "w64-no-channels",
        "caf-rate",
    ],
)
def test_other_failures_keep_their_reasons(make, error, reason):
    with pytest.raises(error, match=reason):
        audio.load_audio(make())


def test_an_empty_recording_is_still_called_empty():
    """A whole file of 0 samples is an empty recording, not a cut one."""
    with pytest.raises(UndecodableMedia, match=r"AIFF file holds no audio samples \(an empty recording\)"):
        audio.load_audio(tm.audio_bytes(np.zeros(0, np.float32), SR, "AIFF"))


# A whole file with a real problem, and the reason it keeps (the sample chunk is complete: nothing is cut)
WHOLE_UNDECODABLE = {
    "wav-unknown-format": (  # was libsndfile's "WAV file cannot be decoded (... Malformed 'fmt ' chunk)"
        lambda: _patched(wav := _tone("WAV"), wav.index(b"fmt ") + 8, b"\x34\x12"),  # format tag 0x1234
        r"the audio codec in this WAV file \(format tag 0x1234\) is not supported; send PCM WAV",
    ),
    "aifc-unknown-compression": (
        lambda: _patched(aifc := _tone("AIFF", "FLOAT"), aifc.index(b"FL32"), b"ZZZZ"),
        r"AIFF file cannot be decoded \(File contains data in an unimplemented format\)",
    ),
    "w64-no-channels": (
        lambda: _patched(_tone("W64"), 66, bytes(2)),
        r"Wave64 file cannot be decoded \(Channel count is zero\)",
    ),
    "caf-no-channels": (  # packets of one size: no packet table is needed after the samples
        lambda: _patched(caf := _tone("CAF"), caf.index(b"lpcm") + 16, bytes(4)),
        "CAF file is corrupt or truncated: Invalid argument",
    ),
}
TRAILERS = {
    "junk": b"\0\0\0",
    "short-LIST": b"LIST" + (40).to_bytes(4, "little") + b"INFO",  # a chunk cut short
    "short-ID3": b"ID3 " + (400).to_bytes(4, "big") + b"ID3\x04",
}


def _aiff_samples_first() -> bytes:
    """A whole AIFF with its SSND chunk before its COMM chunk: AIFF allows it, and libsndfile reads it."""
    aiff = _tone("AIFF")
    comm, ssnd = aiff.index(b"COMM"), aiff.index(b"SSND")
    comm_chunk = aiff[comm : comm + 8 + int.from_bytes(aiff[comm + 4 : comm + 8], "big")]
    ssnd_chunk = aiff[ssnd : ssnd + 8 + int.from_bytes(aiff[ssnd + 4 : ssnd + 8], "big")]
    body = b"AIFF" + ssnd_chunk + comm_chunk
    return b"FORM" + len(body).to_bytes(4, "big") + body


def test_an_aiff_cut_inside_a_comm_chunk_after_its_samples_is_called_cut():
    """The walk stopped at the complete SSND, so a file cut in the COMM after it was refused for libsndfile's
    "Channel count is zero" or "unimplemented format", a format problem that is not there; cut inside the
    COMM's sample rate (its last 10 bytes), libsndfile read 1 Hz and the file was refused with "declares a
    sample rate of 1 Hz; accepted rates are 8000-192000 Hz"."""
    whole = _aiff_samples_first()
    assert audio.load_audio(whole).size == SR  # whole, it decodes
    comm = whole.index(b"COMM")
    for end in range(comm + 1, len(whole)):
        with pytest.raises(UndecodableMedia) as err:
            audio.load_audio(whole[:end])
        assert str(err.value) == CUT.format("AIFF file"), end - comm


# name -> (a whole recording, what the refusals call it, the id of the chunk describing its samples)
DESCRIBED = {
    "WAV": (lambda: _tone("WAV"), "WAV file", b"fmt "),
    "WAV-FLOAT": (lambda: _tone("WAV", "FLOAT"), "WAV file", b"fmt "),
    "W64": (lambda: _tone("W64"), "Wave64 file", W64_FMT),
    "CAF": (lambda: _tone("CAF"), "CAF file", b"desc"),
    "AIFF": (lambda: _tone("AIFF"), "AIFF file", b"COMM"),
    "AIFF-C": (lambda: _tone("AIFF", "FLOAT"), "AIFF file", b"COMM"),
}


@pytest.mark.parametrize("name", DESCRIBED)
def test_a_recording_cut_at_any_byte_of_its_format_chunk_is_refused_as_cut(name):
    """No rate or channel count read from a format chunk the file ends inside is held against it (every
    byte, where the header cuts above sample about 30)."""
    make, what, ident = DESCRIBED[name]
    data = make()
    at = data.index(ident)
    for end in range(at, at + 24 + len(ident)):
        with pytest.raises(UndecodableMedia) as err:
            audio.load_audio(data[:end])
        assert str(err.value) == CUT.format(what), end - at


@pytest.mark.parametrize("trailer", TRAILERS)
@pytest.mark.parametrize("name", WHOLE_UNDECODABLE)
def test_bytes_after_a_whole_sample_chunk_are_no_cut(name, trailer):
    """The walk went on past the complete sample chunk: a few junk bytes or a short trailing chunk after it
    had the file called cut ("send the complete recording"), sending the sender after a truncation that is
    not there, where the same file without them got its decoder's reason."""
    make, reason = WHOLE_UNDECODABLE[name]
    for data in (make(), make() + TRAILERS[trailer]):
        with pytest.raises((UndecodableMedia, UnsupportedMedia), match=reason):
            audio.load_audio(data)
