"""A container with several tracks of one type is read from the one a player would play: the track flagged
default, never cover art (an attached picture is a one-frame video track; a face on it is no patient's)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from av.stream import Disposition
from skimage import data as images
from support import testmedia as tm

from avpenet import contract
from avpenet.features import audio, avclip, tracker

SR = contract.SAMPLE_RATE
LIMITS = tracker.VideoLimits(max_seconds=20)


def _encode_tone(out, stream, freq: float) -> None:
    wave = tm.tone(2.0, SR, freq=freq).astype(np.float32)
    for start in range(0, wave.size, 1024):
        piece = np.ascontiguousarray(wave[start : start + 1024][None, :])
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SR, start
        for packet in stream.encode(frame):
            out.mux(packet)
    out.mux(stream.encode(None))


def _mp4(*, tones: tuple[float, ...], default: int, cover: bool, video: bool) -> bytes:
    """An MP4 with one audio track per tone (track `default` flagged default), optionally a cover picture
    (written before the video track, so it is the container's first video stream) and a face video."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        sounds = []
        for i, _ in enumerate(tones):
            stream = out.add_stream("aac", rate=SR)
            stream.layout = "mono"
            stream.disposition = Disposition.default if i == default else Disposition(0)
            sounds.append(stream)
        pic = vs = None
        if cover:
            pic = out.add_stream("mjpeg")
            pic.width = pic.height = 160
            pic.pix_fmt, pic.disposition = "yuvj420p", Disposition.attached_pic
        if video:
            vs = out.add_stream("libx264", rate=contract.FPS)
            vs.width = vs.height = 160
            vs.pix_fmt = "yuv420p"
        faces = tm.face_frames(images.astronaut(), 2 * contract.FPS, size=(160, 160))
        pictures = [(pic, faces[:1])] if pic else []
        pictures += [(vs, faces)] if vs else []
        for stream, frames in pictures:
            for img in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            out.mux(stream.encode(None))
        for stream, freq in zip(sounds, tones, strict=True):
            _encode_tone(out, stream, freq)
    return buf.getvalue()


def _pitch(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave[: SR // 2 * 2]))
    return float(np.fft.rfftfreq(SR // 2 * 2, 1 / SR)[np.argmax(spectrum)])


@pytest.mark.parametrize("default", [0, 1])
def test_the_audio_track_flagged_default_is_the_one_scored(default):
    data = _mp4(tones=(300.0, 800.0), default=default, cover=False, video=True)
    expected = (300.0, 800.0)[default]
    assert _pitch(audio.load_audio(data)) == pytest.approx(expected, abs=5)
    wave, track = avclip.decode_clip(data, LIMITS, max_audio_seconds=20)
    assert _pitch(wave) == pytest.approx(expected, abs=5) and track.face_present.any()


def test_cover_art_is_not_taken_for_the_video():
    data = _mp4(tones=(500.0,), default=0, cover=True, video=False)
    wave, track = avclip.decode_clip(data, LIMITS, max_audio_seconds=20)
    assert track is None and wave is not None  # scored on the sound alone, as an audio file is
    assert tracker.track_video(data, LIMITS) is None


def test_a_video_behind_cover_art_is_the_one_tracked():
    data = _mp4(tones=(500.0,), default=0, cover=True, video=True)
    _, track = avclip.decode_clip(data, LIMITS, max_audio_seconds=20)
    assert track.n_frames == 2 * contract.FPS and track.face_present.mean() > 0.5  # the video, not one cover
