"""A WAV's or Wave64's `fmt ` and `data` chunks are found however far into the upload they lie. They were
looked for in its first 1,024 bytes (`media.HEAD_BYTES`) only, so a Broadcast WAV whose `bext` (or a `JUNK`
pad, an `iXML`) comes first sent WMA, G.722 or MP3 data back to libsndfile: 422 "Malformed 'fmt ' chunk", or
MP3 decoded by mpg123, which writes upload bytes to stderr; and raw AAC behind a 1,100-byte `JUNK` was scored
on its first 64 ms instead of refused 415.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from support import testmedia as tm
from support.hostile_media import as_w64, mp3_in_wav

from avpenet import contract
from avpenet.errors import UnsupportedMedia
from avpenet.features import audio, chunkwalk, media, truncation, wavcodec

SR = contract.SAMPLE_RATE
ROOT = Path(__file__).parents[2]
# FFmpeg encoder -> (rate, bit rate): each under a format tag libsndfile lacks (MP3: libsndfile's mpg123)
CODECS = {"wmav2": (44_100, 64_000), "adpcm_g722": (SR, None), "libmp3lame": (SR, 64_000)}


def _with_chunk(wav: bytes, ident: bytes, size: int, before: bytes) -> bytes:
    """A RIFF/WAVE with a chunk `ident` of `size` bytes (a Broadcast WAV's `bext`, a `JUNK` pad) put before
    its chunk `before`; the RIFF size follows."""
    at = next(c.body for c in wavcodec.chunks(wav, "wav") if c.ident == before) - 8
    chunk = ident + struct.pack("<I", size) + bytes(size + size % 2)
    body = wav[12:at] + chunk + wav[at:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def _in(container: str, wav: bytes) -> bytes:
    return as_w64(wav) if container == "w64" else wav


@pytest.mark.parametrize("container", ["wav", "w64"])
@pytest.mark.parametrize("ident, size", [(b"bext", 1200), (b"JUNK", 2000), (b"iXML", 4000)])
@pytest.mark.parametrize("codec", CODECS)
def test_a_codec_libsndfile_lacks_behind_a_big_chunk_is_still_ffmpeg_s(codec, ident, size, container):
    rate, bit_rate = CODECS[codec]
    wav = tm.riff_bytes(codec, tm.tone(2.0, rate), rate, bit_rate=bit_rate)
    padded = _in(container, _with_chunk(wav, ident, size, b"fmt "))
    assert padded.index(b"fmt ") > media.HEAD_BYTES
    assert wavcodec.for_ffmpeg(padded, container) == wavcodec.for_ffmpeg(wav, "wav")
    # was 422 "Malformed 'fmt ' chunk" (WMA, G.722), or MP3 decoded by mpg123 (its encoder delay trimmed)
    np.testing.assert_array_equal(audio.load_audio(padded), audio.load_audio(_in(container, wav)))


@pytest.mark.parametrize("container", ["wav", "w64"])
@pytest.mark.parametrize("before", [b"fmt ", b"data"])
def test_raw_aac_behind_a_big_chunk_is_still_refused(before, container):
    """A 1,100-byte JUNK before `data` (or a bext before `fmt `) hid where the samples start."""
    wav = _with_chunk(tm.riff_bytes("aac", tm.tone(2.0, SR), SR), b"JUNK", 1100, before)
    with pytest.raises(UnsupportedMedia, match="AAC without ADTS frame headers"):
        audio.load_audio(_in(container, wav))  # was 64 ms of sound, scored


def test_a_damaged_mp3_wav_behind_a_bext_writes_no_upload_bytes_to_the_log(tmp_path):
    """Sent to libsndfile, its mpg123 printed "Illegal Audio-MPEG-Header 0x…" (upload bytes) to stderr."""
    wav = bytearray(mp3_in_wav(1.0))
    rng = np.random.default_rng(1)
    for at in rng.integers(200, len(wav), 40):
        wav[at] = int(rng.integers(256))
    path = tmp_path / "damaged.wav"
    path.write_bytes(_with_chunk(bytes(wav), b"bext", 1200, b"fmt "))
    code = (
        "from avpenet.features import audio\n"
        f"try:\n    audio.load_audio({str(path)!r})\nexcept Exception:\n    pass\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert not any(word in run.stderr for word in ("MPEG-Header", "mpg123", "0x")), run.stderr


def test_the_walk_stops_after_max_chunks_and_copies_no_upload():
    many = b"".join(b"LIST" + struct.pack("<I", 0) for _ in range(10_000))
    wav = b"RIFF" + struct.pack("<I", 4 + len(many)) + b"WAVE" + many
    assert len(list(wavcodec.chunks(memoryview(wav), "wav"))) == chunkwalk.MAX_CHUNKS
    big = _with_chunk(
        tm.riff_bytes("wmav2", tm.tone(60.0, 44_100), 44_100, bit_rate=64_000), b"JUNK", 2000, b"fmt "
    )
    tracemalloc.start()
    try:
        assert wavcodec.for_ffmpeg(memoryview(big), "wav") is not None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * len(big), f"peak {peak / len(big):.2f}x the upload"


def test_the_codec_and_the_cut_read_one_walk_that_ends_at_the_same_chunk():
    """`wavcodec` and `truncation` walk the chunks by one rule (`chunkwalk.walk`): a JUNK chunk claiming
    more bytes than the upload holds ends the walk for both (its `fmt ` is not looked for, and the file is
    cut), and so does a Wave64 size under its own 24-byte header (no codec is told, and it is not cut)."""
    wma = tm.riff_bytes("wmav2", tm.tone(1.0, 44_100), 44_100, bit_rate=64_000)
    padded = _with_chunk(wma, b"JUNK", 100, b"fmt ")
    oversized = padded[:16] + struct.pack("<I", len(padded)) + padded[20:]  # the JUNK's size
    assert wavcodec.for_ffmpeg(padded, "wav") is not None and not truncation.cut_short(padded, "wav")
    assert wavcodec.for_ffmpeg(oversized, "wav") is None and truncation.cut_short(oversized, "wav")
    w64 = as_w64(wma)
    short = w64[:56] + struct.pack("<Q", 8) + w64[64:]  # the first chunk's size
    assert wavcodec.codec(w64, "w64") is not None and not truncation.cut_short(w64, "w64")
    assert wavcodec.codec(short, "w64") is None and not truncation.cut_short(short, "w64")
