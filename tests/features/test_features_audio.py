"""Audio decoders (WAV/FLAC/OGG/MP4/WebM/MP3 from memory), resampling, windows and the log-mel reference."""

from __future__ import annotations

import io

import av
import librosa
import numpy as np
import pytest
from support import testmedia as tm
from support.reference import librosa_log_mel

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, logmel


def _dominant_hz(wave: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spec) * contract.SAMPLE_RATE / wave.size)


@pytest.mark.parametrize("sr", [16_000, 44_100, 48_000])
@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_soundfile_formats_resampled(sr, fmt, tmp_path):
    src = tm.tone(2.5, sr, freq=1000.0, amp=0.3)
    blob = tm.audio_bytes(src, sr, fmt)
    wave = audio.load_audio(blob)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 2.5 * contract.SAMPLE_RATE) <= 1
    assert _dominant_hz(wave) == pytest.approx(1000.0, abs=2.0)
    assert audio.rms_dbfs(wave) == pytest.approx(audio.rms_dbfs(src), abs=0.3)
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(blob)
    np.testing.assert_array_equal(audio.load_audio(path), wave)


def test_stereo_is_downmixed():
    left = tm.tone(1.0, 48_000, freq=500.0)
    stereo = np.stack([left, -left], axis=1)  # opposite phase: the mono mix cancels
    wave = audio.load_audio(tm.audio_bytes(stereo, 48_000))
    assert np.abs(wave).max() < 1e-3


def test_resampling_removes_content_above_nyquist():
    wave = audio.load_audio(tm.audio_bytes(tm.tone(1.0, 48_000, freq=12_000.0, noise_dbfs=-120), 48_000))
    assert audio.rms_dbfs(wave) < -60  # a 12 kHz tone must not alias into the 16 kHz band


@pytest.mark.parametrize("container", ["mp4", "webm", "matroska"])
def test_audio_track_of_video(container):
    src = tm.tone(2.0, 16_000, freq=600.0)
    blob = tm.video_bytes(tm.noise_frames(20), 10, audio=src, container=container)
    wave = audio.load_audio(blob)
    assert wave.dtype == np.float32
    assert abs(wave.size - src.size) < 0.1 * contract.SAMPLE_RATE  # codec priming/padding only
    assert _dominant_hz(wave) == pytest.approx(600.0, abs=3.0)


def test_mp3():
    sr, src = 44_100, tm.tone(1.5, 44_100, freq=800.0)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sr)
        stream.layout = "mono"
        tm.encode_audio(out, stream, src[None, :], "mono", sr, chunk=1152)
    wave = audio.load_audio(buf.getvalue())
    assert _dominant_hz(wave) == pytest.approx(800.0, abs=3.0)


def test_video_without_audio_is_none():
    assert audio.load_audio(tm.video_bytes(tm.noise_frames(10), 10)) is None


@pytest.mark.parametrize(
    "blob, error",
    [
        (b"", UndecodableMedia),
        (b"hello world, not audio" * 10, UnsupportedMedia),
        (b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(30), UndecodableMedia),
        (b"\x1a\x45\xdf\xa3" + bytes(100), UndecodableMedia),
        (b"\x00\x00\x00\x18ftypmp42" + bytes(100), UndecodableMedia),
    ],
)
def test_bad_bytes(blob, error):
    with pytest.raises(error):
        audio.load_audio(blob)


def test_truncated_wav_and_non_finite():
    blob = tm.audio_bytes(tm.tone(1.0, 16_000), 16_000)
    wave = audio.load_audio(blob[: len(blob) // 2])  # libsndfile reads what is there
    assert wave is not None and 0 < wave.size < contract.SAMPLE_RATE
    nan = tm.tone(1.0, 16_000)
    nan[100] = np.nan
    with pytest.raises(UndecodableMedia, match="NaN"):
        audio.load_audio(tm.audio_bytes(nan, 16_000, subtype="FLOAT"))


def test_duration_limit():
    blob = tm.audio_bytes(tm.tone(3.0, 16_000), 16_000)
    with pytest.raises(TooLarge):
        audio.load_audio(blob, max_seconds=2.0)
    mp4 = tm.video_bytes([], 10, audio=tm.tone(3.0, 16_000))
    with pytest.raises(TooLarge):
        audio.load_audio(mp4, max_seconds=2.0)


# --- windows ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seconds, expected",
    [(0.0, 0), (0.5, 1), (3.0, 1), (3.01, 1), (3.1, 1), (3.2, 2), (4.0, 2), (5.5, 4), (10.0, 8)],
)
def test_window_count(seconds, expected):
    n = int(round(seconds * contract.SAMPLE_RATE))
    assert audio.window_count(n) == expected
    assert audio.windows(np.ones(n, np.float32) * 0.01).shape == (expected, contract.WINDOW_SAMPLES)


def test_windows_cover_hops_and_pad():
    wave = np.sin(np.arange(int(4.5 * contract.SAMPLE_RATE)) * 0.05).astype(np.float32) * 0.1
    w = audio.windows(wave)
    assert w.shape == (3, contract.WINDOW_SAMPLES) and w.dtype == np.float32
    for i in range(3):
        piece = wave[i * contract.HOP_SAMPLES : i * contract.HOP_SAMPLES + contract.WINDOW_SAMPLES]
        ratio = w[i, : piece.size] / np.where(piece == 0, 1, piece)
        assert np.allclose(ratio[piece != 0], ratio[piece != 0][0], rtol=1e-4)  # one gain per window
        assert audio.rms_dbfs(w[i, : piece.size]) == pytest.approx(contract.AUDIO_TARGET_RMS_DBFS, abs=0.01)
    assert not w[2, int(2.5 * contract.SAMPLE_RATE) :].any()  # padding stays zero
    assert w[2, : int(2.5 * contract.SAMPLE_RATE)].any()


def test_silence_and_noise_floor_are_not_turned_into_cries():
    silent = audio.windows(np.zeros(contract.WINDOW_SAMPLES, np.float32))
    assert not silent.any()
    rng = np.random.default_rng(0)
    for floor_db in (-70.0, -55.0, -48.0):
        noise = rng.normal(0, 10 ** (floor_db / 20), contract.WINDOW_SAMPLES).astype(np.float32)
        out = audio.rms_dbfs(audio.windows(noise)[0])
        assert out <= contract.AUDIO_TARGET_RMS_DBFS - 10, floor_db
    # Output level is monotone in input level: a quieter window never comes out louder.
    levels = np.linspace(-90, 0, 181)
    outs = [lv + audio.normalisation_gain_db(lv) for lv in levels]
    assert np.all(np.diff(outs) >= -1e-9)


# --- log-mel ---------------------------------------------------------------------------------------------


def _realistic_windows() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(contract.WINDOW_SAMPLES) / contract.SAMPLE_RATE
    f0 = 450 + 150 * np.sin(2 * np.pi * 0.7 * t)  # a cry-like rising/falling melody with harmonics
    phase = 2 * np.pi * np.cumsum(f0) / contract.SAMPLE_RATE
    cry = sum(0.2 / k * np.sin(k * phase) for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * t))
    noise = rng.normal(0, 10 ** (-45 / 20), t.size)
    tail = np.zeros_like(t)
    tail[: t.size // 2] = rng.normal(0, 0.05, t.size // 2)  # a padded last window
    return [audio.windows(x.astype(np.float32))[0] for x in (cry + noise, noise, tail + noise * 0.1)]


def test_log_mel_matches_librosa():
    for w in _realistic_windows():
        ref = logmel.reference_log_mel(w)
        assert ref.shape == contract.LOG_MEL.shape and ref.dtype == np.float32
        assert np.abs(ref - librosa_log_mel(w)).max() <= 1e-4


def test_log_mel_building_blocks():
    fb = librosa.filters.mel(
        sr=contract.SAMPLE_RATE, n_fft=contract.N_FFT, n_mels=contract.N_MELS, fmin=contract.F_MIN,
        fmax=contract.F_MAX, htk=False, norm="slaney", dtype=np.float64,
    )  # fmt: skip
    np.testing.assert_allclose(logmel.mel_filterbank(), fb, atol=1e-12)
    hann = librosa.filters.get_window("hann", contract.N_FFT, fftbins=True)
    np.testing.assert_allclose(logmel.hann_window(), hann)
    w = _realistic_windows()[0]
    re, im = logmel.dft_basis()
    fr = logmel.frames(w)
    power = (fr @ re.T) ** 2 + (fr @ im.T) ** 2
    via_basis = np.log(np.maximum(power @ logmel.mel_filterbank().T, contract.LOG_MEL_FLOOR)).T
    assert np.abs(via_basis - logmel.reference_log_mel(w)[0]).max() < 1e-4
    batch = logmel.reference_log_mel(np.stack(_realistic_windows()))
    assert batch.shape == (3, *contract.LOG_MEL.shape)
    with pytest.raises(ValueError):
        logmel.reference_log_mel(np.zeros(100))
