"""A container's sound decodes to the length the container declares for it, not to the codec's last frame.

An AAC encoder pads its last 1024-sample frame; FFmpeg trims the priming before the first (by the MP4 edit
list) but decodes that padding. So a clip served as one MP4 (`clip`) decoded 3-60 ms longer than the WAV
training and evaluation read for the same recording, and clips of N.1 s got one window more when served
(examples/adult-moan-audio-only.wav: 3 windows and 6.41 as WAV, 4 windows and 5.40 as MP4). The wave now
ends where the track's declared duration (the edit list's) ends; a track declaring none keeps its length."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from support import testmedia as tm

from avpenet import contract
from avpenet.features import audio, avaudio, avclip, tracker, windows
from avpenet.synth import render

SR = contract.SAMPLE_RATE
LIMITS = tracker.VideoLimits(max_seconds=20)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _noise(seconds: float, rate: int, seed: int = 1) -> np.ndarray:
    n = int(round(seconds * rate))
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _wav(raw: np.ndarray, rate: int) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, raw, rate, format="WAV", subtype="PCM_16")
    return audio.load_audio(buf.getvalue())


def _served(raw: np.ndarray, rate: int, path: Path, frames: int | None = None) -> tuple:
    """The synth renderer's MP4 of `raw` (a grey picture), decoded as the gateway decodes a `clip`."""
    n = frames or int(np.ceil(raw.size / rate * contract.FPS))
    render.write_mp4(path, np.full((n, 32, 32, 3), 128, np.uint8), raw, rate)
    return avclip.decode_clip(path.read_bytes(), LIMITS)


@pytest.mark.parametrize("rate", [16_000, 44_100, 48_000])
@pytest.mark.parametrize("seconds", [3.1, 4.1, 7.1])
def test_an_mp4_decodes_to_the_samples_and_windows_of_the_wav_it_was_made_from(tmp_path, rate, seconds):
    raw = _noise(seconds, rate)
    wav = _wav(raw, rate)
    served, track = _served(raw, rate, tmp_path / "clip.mp4")
    assert abs(served.size - wav.size) <= 2  # was 64-960 samples (4-60 ms) longer
    assert audio.window_count(served.size) == audio.window_count(wav.size)
    trained = windows.model_inputs(wav, track, "adult")[contract.AGE_GROUP.name]
    scored = windows.model_inputs(served, track, "adult", served=True)[contract.AGE_GROUP.name]
    assert len(scored) == len(trained)


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_an_m4a_from_a_phone_encoder_decodes_to_its_samples(rate):
    """Audio alone, as a phone's recorder writes it: stereo AAC in an M4A (PyAV's encoder, FFmpeg's muxer)."""
    raw = _noise(4.1, rate)
    buf = io.BytesIO()
    with av.open(buf, "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        pcm = np.clip(raw * 32767, -32768, 32767).astype(np.int16)
        for start in range(0, pcm.size, 1024):
            block = np.repeat(pcm[start : start + 1024], 2)[None, :]  # packed s16: L R L R...
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    wave = audio.load_audio(buf.getvalue())
    assert abs(wave.size - round(4.1 * SR)) <= 2
    assert audio.window_count(wave.size) == audio.window_count(_wav(raw, rate).size) == 2


def test_a_clip_served_as_mp4_scores_as_its_wav(tmp_path):
    from avpenet.aggregate import aggregate_windows
    from avpenet.model import load_model
    from avpenet.predict import predict_windows

    model = load_model().model

    def score(wave: np.ndarray) -> tuple[float, int]:
        out = predict_windows(model, windows.model_inputs(wave, None, "adult"))
        parts = ("score", "log_variance", "class_probs", "modality_weights")
        agg = aggregate_windows(*(out[k] for k in parts))
        return float(agg["score"]), len(out["score"])

    raw, rate = sf.read(EXAMPLES / "adult-moan-audio-only.wav", dtype="float32")
    wav = audio.load_audio((EXAMPLES / "adult-moan-audio-only.wav").read_bytes())
    served, _ = _served(raw, rate, tmp_path / "moan.mp4")
    (wav_score, wav_windows), (mp4_score, mp4_windows) = score(wav), score(served)
    assert mp4_windows == wav_windows == 3  # the MP4 had a 4th window of 0.11 s of sound
    assert mp4_score == pytest.approx(wav_score, abs=0.1)  # AAC's own difference: 0.01 (was 1.01)


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_audio_that_starts_after_the_video_keeps_its_place_and_its_length(rate):
    """The edit list's empty edit puts the audio 0.5 s in: led in with silence as before, and it ends
    where its declared duration ends (0.5 s + its 3.1 s), not a codec frame later. FFmpeg's muxer writes
    the empty edit in milliseconds, so the place is kept to within 1 ms (16 samples)."""
    raw = _noise(3.1, rate)
    grey = [np.full((48, 48, 3), 128, np.uint8)] * 36
    wave, track = avclip.decode_clip(
        tm.video_bytes(grey, contract.FPS, audio=raw, sr=rate, audio_start_s=0.5), LIMITS
    )
    assert track.n_frames == 36
    expected = np.concatenate([np.zeros(SR // 2, np.float32), audio.resample(raw, rate)])
    assert abs(wave.size - expected.size) <= 16  # was 576 (16 kHz) and 171 (44.1 kHz) samples longer
    lag = int(np.argmax(np.correlate(wave[: SR * 2], expected[SR // 2 : SR], "valid")))
    assert abs(lag - SR // 2) <= 16  # the sound's first sample is at 0.5 s, as before
    assert wave.size - lag == pytest.approx(raw.size * SR / rate, abs=2)  # all of it, and no more


def test_a_track_without_a_declared_end_keeps_what_it_decodes():
    """Matroska declares no duration per track, an ADTS .aac only a guess from its bit rate: both decode to
    the codec's frames, as before (nothing is cut without the container's word)."""
    raw = tm.tone(3.1, SR, freq=500.0)
    grey = [np.full((48, 48, 3), 128, np.uint8)] * 31
    wave, _ = avclip.decode_clip(tm.video_bytes(grey, contract.FPS, audio=raw, container="matroska"), LIMITS)
    assert wave.size == 50_176  # 49 AAC frames after the priming
    assert audio.load_audio(tm.adts_bytes(raw, SR)).size == 51_200  # ADTS: the priming frame too


def test_a_declared_end_more_than_a_frame_early_is_not_padding(monkeypatch, tmp_path):
    """An end declared further back than one codec frame is no padding (a wrong header, a timestamp break):
    nothing is cut."""
    raw = _noise(3.1, SR)
    path = tmp_path / "clip.mp4"
    render.write_mp4(path, np.full((31, 32, 32, 3), 128, np.uint8), raw, SR)
    monkeypatch.setattr(avaudio, "_declared_end", lambda stream, kind: 2.5)
    assert audio.load_audio(path.read_bytes()).size == 50_176
    monkeypatch.setattr(avaudio, "_declared_end", lambda stream, kind: 3.1)
    assert audio.load_audio(path.read_bytes()).size == raw.size
