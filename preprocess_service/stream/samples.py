"""One audio chunk's samples, checked (rate, float32, length, finite and in range), and the time a refused
one stands for: it is kept on the stream's timeline as silence, so the audio stays level with the frames, and
counted as no sound (`Unheard`)."""

from __future__ import annotations

import numpy as np

from avpenet.errors import InputError
from avpenet.features import audio as faudio
from preprocess_service.stream.inbound import header_rate
from preprocess_service.stream.protocol import MAX_AUDIO_CHUNK_S, StreamRejected


def audio_wave(header: dict, payload: memoryview, sample_rate: int) -> np.ndarray:
    """The chunk's float32 samples at the stream's `sample_rate`; StreamRejected when they are not usable."""
    rate = header.get("rate", sample_rate)
    if rate != sample_rate:
        raise StreamRejected(
            "rate_changed",
            f"audio chunk at {rate} Hz in a stream started at {sample_rate} Hz; open a new stream",
        )
    if len(payload) % 4:
        raise StreamRejected("bad_audio", "audio payload must be little-endian float32 samples")
    wave = np.frombuffer(payload, "<f4").astype(np.float32)
    if wave.size > MAX_AUDIO_CHUNK_S * sample_rate:
        raise StreamRejected(
            "bad_audio", f"audio chunk longer than {MAX_AUDIO_CHUNK_S} s; send smaller chunks"
        )
    try:
        faudio.check_wave(wave, "the audio chunk's samples")
    except InputError as exc:
        raise StreamRejected("bad_audio", str(exc)) from None
    return wave


def refused_samples(header: dict, size: int, sample_rate: int) -> int:
    """Samples at the stream's rate that a refused chunk of `size` payload bytes stands for: its float32
    samples at the rate its header names (the stream's when that is not a rate), at most MAX_AUDIO_CHUNK_S."""
    seconds = min(size // 4 / header_rate(header, sample_rate), MAX_AUDIO_CHUNK_S)
    return int(round(seconds * sample_rate))


class Unheard:
    """The spans of a stream's 16 kHz audio timeline that hold no sound received: the silence refused chunks
    stand for (state.StreamState.add_audio; at their resampled length). They keep the timeline, but a window
    more than half made of them (`mostly_in`) is a window without audio, as a window of frames without a face
    is one without a face: audio_present 0, signal_lost, no_signal when the face is absent too. Before, such a
    window was scored from digital zeros as a calm, silent patient. [start, stop) sample numbers, in order."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []

    def add(self, start: int, stop: int) -> None:
        if stop <= start:
            return
        if self.spans and self.spans[-1][1] >= start:  # joins the last one (refused chunks in a row)
            self.spans[-1] = (self.spans[-1][0], max(stop, self.spans[-1][1]))
        else:
            self.spans.append((start, stop))

    def mostly_in(self, start: int, stop: int) -> bool:
        """Whether more than half of the samples [start, stop) a window holds are unheard."""
        unheard = sum(max(0, min(b, stop) - max(a, start)) for a, b in self.spans)
        return 2 * unheard > stop - start

    def forget_before(self, at: int) -> None:
        """Drop what lies before sample `at` (no later window reads it): the list stays bounded."""
        self.spans = [(max(a, at), b) for a, b in self.spans if b > at]
