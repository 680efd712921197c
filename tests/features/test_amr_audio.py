"""AMR-NB and AMR-WB files (`#!AMR\\n` / `#!AMR-WB\\n`, what Android voice recorders write) are decoded by
FFmpeg through PyAV, as ADTS AAC and MP3 are, under the same limits. They were refused 415 "unsupported audio
type" although PyAV's FFmpeg has both decoders (amrnb, amrwb)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from support import testmedia as tm
from support.opens import record_av_opens

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, media, tracker

SR = contract.SAMPLE_RATE


def _dominant_hz(wave: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spec) * SR / wave.size)


def test_pyavs_ffmpeg_has_both_amr_decoders():
    assert {"amrnb", "amrwb"} <= av.codecs_available


def test_an_amr_nb_recording_is_decoded(tmp_path):
    data = tm.amr_nb_bytes(tm.tone(3.0, 8000, freq=440.0))
    assert media.sniff(data[: media.HEAD_BYTES]) == "amr"
    wave = audio.load_audio(data)  # was 415 "unsupported audio type"
    assert abs(wave.size - 3 * SR) <= 0.02 * SR * 2  # whole 20-ms frames
    assert _dominant_hz(wave) == pytest.approx(440.0, abs=3.0)
    path = tmp_path / "voice.amr"
    path.write_bytes(data)
    np.testing.assert_array_equal(audio.load_audio(path), wave)


def test_an_amr_wb_recording_is_decoded():
    wave = audio.load_audio(tm.amr_wb_bytes(150))  # 150 frames of 20 ms at 16 kHz
    assert wave.size == 150 * 320 and np.all(np.isfinite(wave)) and np.abs(wave).max() > 0


def test_amr_is_opened_with_the_amr_demuxer_alone(monkeypatch):
    calls = record_av_opens(monkeypatch)
    audio.load_audio(tm.amr_wb_bytes(10))
    assert calls[0]["format"] == "amr" and calls[0]["container_options"]["format_whitelist"] == "amr"
    assert calls[0]["container_options"]["protocol_whitelist"] == ""


def test_the_duration_limit_and_its_grace_hold():
    # FFmpeg guesses an AMR's duration from its bit rate, 3-5% long: the decoded length is what counts
    wave = audio.load_audio(tm.amr_nb_bytes(tm.tone(10.3, 8000)), max_seconds=10)
    assert wave.size == 10 * SR  # within the grace: cut to the limit, as a WAV is
    with pytest.raises(TooLarge, match="audio lasts over 10.5 s; the limit is 10 s"):
        audio.load_audio(tm.amr_nb_bytes(tm.tone(11.0, 8000)), max_seconds=10)


@pytest.mark.parametrize("header", [b"#!AMR\n", b"#!AMR-WB\n"])
def test_a_header_without_frames_is_a_broken_recording_not_silence(header):
    # "no audio" would score the clip on the face alone; a cut frame: tests/features/test_cut_headers.py
    with pytest.raises(
        UndecodableMedia, match="AMR file declares audio but no sample decodes: it is corrupt"
    ):
        audio.load_audio(header)


def test_a_recording_cut_mid_upload_keeps_its_decoded_start():
    data = tm.amr_nb_bytes(tm.tone(4.0, 8000))
    wave = audio.load_audio(data[: len(data) // 2])
    assert 1.9 * SR < wave.size <= 2.0 * SR
    np.testing.assert_array_equal(wave[: SR // 2], audio.load_audio(data)[: SR // 2])


def test_multichannel_amr_stays_unsupported():
    with pytest.raises(UnsupportedMedia, match="unsupported audio type; send WAV.* AMR-NB/AMR-WB"):
        audio.load_audio(b"#!AMR_MC1.0\n" + bytes(4) + tm.amr_nb_bytes(tm.tone(1.0, 8000))[6:])


def test_amr_is_audio_not_video():
    with pytest.raises(UnsupportedMedia, match="unsupported video type; send MP4, MOV, WebM or MKV"):
        list(tracker.iter_video_frames(tm.amr_nb_bytes(tm.tone(1.0, 8000))))
