"""AIFF/AIFF-C (Apple devices, bedside recorders), CAF (Apple Core Audio) and Sony Wave64 are read by
libsndfile like WAV/FLAC/OGG: the same limits (rate, channels, duration and its grace), the same channel mix,
the same reasons when a file cannot be decoded. They were refused 415 "unsupported audio type".

A CAF libsndfile cannot read (codecs it lacks: IMA4, FFmpeg's ALAC; a file cut short, which it calls
malformed) is read by PyAV, as an Ogg is.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import testmedia as tm

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, media, tracker

SR = contract.SAMPLE_RATE
# (soundfile format, subtype, sniffed kind, what the refusals call it); AIFF with float or compressed samples
# is written as AIFF-C ("AIFC" form type)
FORMATS = [
    ("AIFF", "PCM_16", "aiff", "AIFF file"),
    ("AIFF", "FLOAT", "aiff", "AIFF file"),
    ("CAF", "PCM_16", "caf", "CAF file"),
    ("CAF", "ALAC_16", "caf", "CAF file"),
    ("W64", "PCM_24", "w64", "Wave64 file"),
]
IDS = [f"{fmt}-{subtype}" for fmt, subtype, _, _ in FORMATS]
W64_RIFF = bytes.fromhex("726966662e91cf11a5d628db04c10000")  # the GUID a Wave64 file starts with


def _dominant_hz(wave: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spec) * SR / wave.size)


@pytest.mark.parametrize(("fmt", "subtype", "kind", "_what"), FORMATS, ids=IDS)
def test_decoded_like_the_same_sound_in_a_wav(fmt, subtype, kind, _what, tmp_path):
    src = np.stack([tm.tone(2.5, 44_100, freq=1000.0), tm.tone(2.5, 44_100, freq=1000.0, seed=1)], axis=1)
    data = tm.audio_bytes(src, 44_100, fmt, subtype)
    assert media.sniff(data[: media.HEAD_BYTES]) == kind
    wave = audio.load_audio(data)  # was 415 "unsupported audio type"
    reference = audio.load_audio(tm.audio_bytes(src, 44_100, "WAV", "FLOAT"))  # mixed down the same way
    assert wave.size == reference.size == 2.5 * SR
    np.testing.assert_allclose(wave, reference, atol=1e-4)  # 16/24-bit quantisation
    assert _dominant_hz(wave) == pytest.approx(1000.0, abs=2.0)
    path = tmp_path / f"recording.{kind}"
    path.write_bytes(data)
    np.testing.assert_array_equal(audio.load_audio(path), wave)


@pytest.mark.parametrize(("fmt", "subtype", "_kind", "what"), FORMATS, ids=IDS)
def test_the_limits_of_wav_hold(fmt, subtype, _kind, what):
    tone = tm.tone(10.3, SR)
    wave = audio.load_audio(tm.audio_bytes(tone, SR, fmt, subtype), max_seconds=10)
    assert wave.size == 10 * SR  # within the duration grace: cut to the limit
    with pytest.raises(TooLarge, match="audio lasts 11.0 s; the limit is 10 s"):
        audio.load_audio(tm.audio_bytes(tm.tone(11.0, SR), SR, fmt, subtype), max_seconds=10)
    with pytest.raises(UndecodableMedia, match=f"{what} declares 10 audio channels; at most 8"):
        audio.load_audio(tm.audio_bytes(np.zeros((SR, 10), np.float32), SR, fmt))  # ALAC holds at most 8
    with pytest.raises(UndecodableMedia, match=f"{what} declares a sample rate of 4000 Hz"):
        audio.load_audio(tm.audio_bytes(tm.tone(1.0, 4000), 4000, fmt, subtype))


@pytest.mark.parametrize("fmt", ["AIFF", "CAF", "W64"])
def test_a_file_cut_mid_upload_keeps_its_decoded_start(fmt):
    blob = tm.audio_bytes(tm.tone(4.0, SR), SR, fmt)
    wave = audio.load_audio(blob[: len(blob) // 2])  # libsndfile calls a cut CAF malformed: PyAV reads it
    assert 1.8 * SR < wave.size <= 2.0 * SR
    np.testing.assert_allclose(wave, audio.load_audio(blob)[: wave.size], atol=1e-6)


@pytest.mark.parametrize("codec", ["adpcm_ima_qt", "alac"])
def test_a_caf_of_a_codec_libsndfile_lacks_is_read_by_pyav(codec):
    wave = audio.load_audio(tm.caf_bytes(codec, tm.tone(2.0, SR, freq=700.0), SR))
    assert abs(wave.size - 2 * SR) <= 0.05 * SR  # ALAC's last 4096-sample packet
    assert _dominant_hz(wave) == pytest.approx(700.0, abs=3.0)


@pytest.mark.parametrize("fmt", ["AIFF", "CAF", "W64"])
def test_audio_files_are_not_video(fmt):
    with pytest.raises(UnsupportedMedia, match="unsupported video type; send MP4, MOV, WebM or MKV"):
        list(tracker.iter_video_frames(tm.audio_bytes(tm.tone(1.0, SR), SR, fmt)))


@pytest.mark.parametrize(
    "head",
    [
        b"FORM\x00\x00\x10\x008SVX" + bytes(52),  # IFF 8SVX (Amiga): FORM, but not AIFF
        b"caff\x00\x02\x00\x00" + bytes(56),  # a CAF version that does not exist
        W64_RIFF + bytes(8) + b"WAVE" + bytes(36),  # the riff GUID without the wave GUID
    ],
)
def test_near_misses_are_not_sniffed(head):
    assert media.sniff(head) is None
