"""Raw ADTS AAC and an MP3 without a Xing/Info header have no duration in any header: FFmpeg guesses it from
the bit rate of their first frames. A recording that starts quietly (a pause before the cry) has small first
frames, so the guess ran long: an honest 19.8-s clip was refused 413 "audio lasts 25.8 s" (ADTS) or "37.5 s"
(VBR MP3) under a 20-s limit. As for AMR, only their decoded length is held to the limit now, and a file
really over it is still refused while it decodes.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import testmedia as tm
from support.hostile_media import as_w64

from avpenet import contract
from avpenet.errors import TooLarge
from avpenet.features import audio

SR = contract.SAMPLE_RATE
LIMIT = 20.0


def _quiet_then_loud(seconds: float, quiet_s: float = 3.0, sr: int = SR) -> np.ndarray:
    """A faint noise floor, then a loud noisy sound: small coded frames first, large ones after."""
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.3, int(seconds * sr)).astype(np.float32)
    wave[: int(quiet_s * sr)] *= 3e-4
    return wave


def _mp3_in_wav(seconds: float, byte_rate: int) -> bytes:
    """A WAV of a VBR MP3 (no Xing header, no ID3 tag) whose fmt chunk says `byte_rate` (0: unknown)."""
    return tm.wav_of(
        0x0055, tm.mp3_bytes(_quiet_then_loud(seconds), SR, vbr_quality=4, xing=False, id3=False), SR,
        byte_rate=byte_rate,
    )  # fmt: skip


# name -> the bytes of a recording of that many seconds
ENCODERS = {
    "adts": lambda s: tm.adts_bytes(_quiet_then_loud(s), SR),
    "mp3-vbr-without-xing": lambda s: tm.mp3_bytes(_quiet_then_loud(s), SR, vbr_quality=4, xing=False),
    "mp3-vbr": lambda s: tm.mp3_bytes(_quiet_then_loud(s), SR, vbr_quality=4),
    "mp3-cbr": lambda s: tm.mp3_bytes(_quiet_then_loud(s), SR),
    # A WAV of MP3 data written by FFmpeg's wav muxer (LAME V0 at 44.1 kHz): its fmt chunk's byte rate is 0
    # and FFmpeg ignores its fact chunk's length (implausible for MP3), so it guessed from the first frames.
    "mp3-in-wav-by-ffmpeg": lambda s: tm.riff_bytes(
        "libmp3lame", _quiet_then_loud(s, sr=44_100), 44_100, vbr_quality=0
    ),
    "mp3-in-wav-no-byte-rate": lambda s: _mp3_in_wav(s, 0),
    "mp3-in-wav-nominal-byte-rate": lambda s: _mp3_in_wav(s, 1000),  # 8 kbit/s: its first, quiet frames'
    "adts-in-wav": lambda s: tm.wav_of(0x1600, tm.adts_bytes(_quiet_then_loud(s), SR), SR),
    "adts-in-wave64": lambda s: as_w64(tm.wav_of(0x1600, tm.adts_bytes(_quiet_then_loud(s), SR), SR)),
}


@pytest.mark.parametrize("name", ENCODERS)
def test_a_clip_just_under_the_limit_is_not_refused_for_a_guessed_duration(name):
    wave = audio.load_audio(ENCODERS[name](19.8), max_seconds=LIMIT)
    # was 413 "audio lasts 25.8 s" (ADTS), "37.5 s" (MP3); in a WAV "20.9 s" (FFmpeg's), "32.0 s", "37.6 s"
    assert 19.8 * SR <= wave.size <= LIMIT * SR


@pytest.mark.parametrize("name", ENCODERS)
def test_a_clip_over_the_limit_is_still_refused(name):
    with pytest.raises(TooLarge, match=r"audio lasts (over )?\d+\.\d s; the limit is 20 s"):
        audio.load_audio(ENCODERS[name](21.0), max_seconds=LIMIT)
