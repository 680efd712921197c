"""A WAV or Wave64 whose `fmt ` chunk names a codec libsndfile has no reader for was refused 422 "WAV file
cannot be decoded (Error in WAV/W64/RF64 file. Malformed 'fmt ' chunk)" (WAVE_FORMAT_EXTENSIBLE: "File
contains data in an unimplemented format"), words a hospital integrator cannot act on. FFmpeg decodes many
of them whole, so it reads them now (`wavcodec`); a codec it does not decode is 415 naming the format tag and
what to send, and so is raw AAC, whose frames a WAV does not delimit (FFmpeg decoded its first 64 ms).
"""

from __future__ import annotations

import numpy as np
import pytest
from support import testmedia as tm
from support.hostile_media import as_w64

from avpenet import contract
from avpenet.errors import UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, chunkwalk, media, wavcodec

SR = contract.SAMPLE_RATE
TONE_HZ = 440.0
# FFmpeg encoder -> (rate, bit rate): what its wav and w64 muxers write, each under a tag libsndfile lacks
FFMPEG_CODECS = {
    "wmav2": (44_100, 64_000),  # 0x0161: WMA, as Windows recorders write
    "wmav1": (44_100, 64_000),  # 0x0160
    "adpcm_g722": (SR, None),  # 0x028F: G.722, wideband telephony
    "adpcm_g726": (8000, 32_000),  # 0x0045
    "adpcm_yamaha": (SR, None),  # 0x0020
    "ac3": (48_000, 96_000),  # 0x2000
    "eac3": (48_000, 96_000),  # 0xFFFE, WAVE_FORMAT_EXTENSIBLE: its subformat GUID names E-AC-3
    "flac": (SR, None),  # 0xF1AC
}
UNSUPPORTED = (
    "the audio codec in this {} ({}) is not supported; send PCM WAV or FLAC, OGG, AIFF/AIFC, CAF, Wave64, "
    "MP3, AAC (ADTS), AMR-NB/AMR-WB, or the audio track of MP4/MOV/WebM/MKV"
)


def _peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * SR / wave.size)


def _relabelled(data: bytes, tag: int) -> bytes:
    """`data` (a whole WAV or Wave64) with its `fmt ` chunk's format tag changed to `tag`."""
    kind = media.sniff(data)
    body = next(c.body for c in wavcodec.chunks(data, kind) if c.ident == chunkwalk.LAYOUTS[kind].form)
    return data[:body] + tag.to_bytes(2, "little") + data[body + 2 :]


@pytest.mark.parametrize("container", ["wav", "w64"])
@pytest.mark.parametrize("codec", FFMPEG_CODECS)
def test_a_codec_libsndfile_lacks_is_decoded_by_ffmpeg(codec, container):
    rate, bit_rate = FFMPEG_CODECS[codec]
    data = tm.riff_bytes(
        codec, tm.tone(2.0, rate, freq=TONE_HZ), rate, container=container, bit_rate=bit_rate
    )
    assert wavcodec.for_ffmpeg(data[: media.HEAD_BYTES], container) is not None
    wave = audio.load_audio(data)  # was 422 "cannot be decoded (... Malformed 'fmt ' chunk)"
    assert abs(wave.size - 2 * SR) < 0.1 * SR
    assert _peak_hz(wave) == pytest.approx(TONE_HZ, abs=5.0)
    cut = audio.load_audio(data[: len(data) // 2])  # cut mid-upload: its decoded start is kept
    assert 0.7 * SR < cut.size < 1.3 * SR


@pytest.mark.parametrize("tag", [0x00FF, 0x1600, 0x706D])
def test_adts_aac_in_a_wav_is_decoded_whole(tag):
    """ADTS frames carry their own headers: FFmpeg splits and decodes them all in a WAV too."""
    adts = tm.adts_bytes(tm.tone(2.0, SR, freq=TONE_HZ), SR)
    wave = audio.load_audio(tm.wav_of(tag, adts, SR))  # was 422 "Malformed 'fmt ' chunk"
    np.testing.assert_array_equal(wave, audio.load_audio(adts))  # as the .aac: every frame
    assert _peak_hz(wave) == pytest.approx(TONE_HZ, abs=5.0)


@pytest.mark.parametrize("container", ["wav", "w64"])
def test_raw_aac_in_a_wav_is_refused_naming_its_tag_and_what_to_send(container):
    """FFmpeg's own wav muxer writes raw AAC frames (no ADTS header), which a WAV does not delimit: FFmpeg
    decoded the first 64 ms of 2 s and dropped the rest, so it is refused before, not scored short."""
    data = tm.riff_bytes("aac", tm.tone(2.0, SR), SR, container=container)
    with pytest.raises(UnsupportedMedia) as err:
        audio.load_audio(data)  # was 422 "cannot be decoded (... Malformed 'fmt ' chunk)"
    assert str(err.value) == (
        f"the audio codec in this {media.describe(container)} (format tag 0x00FF, AAC without ADTS frame "
        "headers: a WAV does not delimit its frames) is not supported; send the AAC as an ADTS (.aac) or "
        "MP4/M4A file, or PCM WAV"
    )


@pytest.mark.parametrize("as_wave64", [False, True])
def test_a_codec_ffmpeg_does_not_know_is_415_naming_its_tag(as_wave64):
    data = _relabelled(tm.audio_bytes(tm.tone(1.0, SR), SR), 0x1234)
    data = as_w64(data) if as_wave64 else data
    with pytest.raises(UnsupportedMedia) as err:
        audio.load_audio(data)  # was 422 "cannot be decoded (... Malformed 'fmt ' chunk)"
    what = "Wave64 file" if as_wave64 else "WAV file"
    assert str(err.value) == UNSUPPORTED.format(what, "format tag 0x1234")


def test_an_extensible_wav_names_its_subformat():
    """WAVE_FORMAT_EXTENSIBLE names its codec by a GUID; libsndfile said "unimplemented format"."""
    data = tm.audio_bytes(tm.tone(1.0, SR), SR, "WAVEX")
    assert wavcodec.codec(data, "wav") == (0xFFFE, bytes.fromhex("0100000000001000800000aa00389b71"))
    assert wavcodec.for_ffmpeg(data, "wav") is None  # extensible PCM stays libsndfile's
    guid = next(c.body for c in wavcodec.chunks(data, "wav") if c.ident == b"fmt ") + 24
    data = data[:guid] + b"\x34\x12" + data[guid + 2 :]
    with pytest.raises(UnsupportedMedia) as err:
        audio.load_audio(data)  # was 422 "cannot be decoded (File contains data in an unimplemented format)"
    assert str(err.value) == UNSUPPORTED.format(
        "WAV file", "format tag 0xFFFE, subformat 00001234-0000-0010-8000-00aa00389b71"
    )


def test_libsndfile_keeps_the_codecs_it_reads_and_a_wav_cut_at_its_data_header_is_cut():
    for subtype in ("PCM_16", "FLOAT", "ULAW", "ALAW", "IMA_ADPCM", "MS_ADPCM", "GSM610", "G721_32"):
        rate = 8000 if subtype in ("GSM610", "G721_32") else SR
        data = tm.audio_bytes(tm.tone(0.5, rate), rate, "WAV", subtype)
        assert wavcodec.for_ffmpeg(data[: media.HEAD_BYTES], "wav") is None, subtype
    data = tm.riff_bytes("wmav2", tm.tone(1.0, 44_100), 44_100, bit_rate=64_000)
    samples = next(c.body for c in wavcodec.chunks(data, "wav") if c.ident == b"data")
    with pytest.raises(UndecodableMedia, match="WAV file declares audio but no sample decodes"):
        audio.load_audio(data[:samples])
