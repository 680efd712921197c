"""The audio track of a PyAV container, decoded packet by packet: MP3, ADTS AAC, AMR, a WAV or Wave64
of a codec libsndfile lacks (MP3, WMA...: `wavcodec`), an Ogg or CAF libsndfile cannot read, MP4/MOV/WebM/MKV.

Shared by `audio.load_audio` (the track alone) and `avclip.decode_clip` (the same demux pass as the video, so
a clip's container is read once). The checks and errors are `audio`'s.
"""

from __future__ import annotations

import av
import numpy as np

from avpenet import contract
from avpenet.errors import UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, media, mp4index, truncation

# The numpy dtype of each FFmpeg sample format, packed or planar (its name without the "p": "fltp" -> "flt").
SAMPLE_DTYPES = {
    "u8": np.dtype(np.uint8), "s16": np.dtype(np.int16), "s32": np.dtype(np.int32), "s64": np.dtype(np.int64),
    "flt": np.dtype(np.float32), "dbl": np.dtype(np.float64),
}  # fmt: skip


def read(source: media.Source, kind: str, limit: float) -> tuple[np.ndarray | None, int]:
    """(mono float32 samples, their rate) of the main audio track of a file PyAV opens alone; None (at the
    model rate) when it has no audio track. Used by `audio.load_audio` and `sfaudio.load`.

    A file of one codec's frames (`media.ONE_CODEC_KINDS`) or a WAV/Wave64 (of MP3 data, or another codec
    libsndfile lacks) that decodes no sample is UndecodableMedia, never "no audio": an AMR header with no
    frame behind it (an upload cut short) is a broken recording (a WAV of MP3 data cut after its data chunk
    header was "no audio", so its clip was scored on the face alone). When FFmpeg fails before any sample (or
    none decodes) and the file ends inside its header (`truncation`: a CAF, a WAV of MP3 data, an AMR's first
    frame), the refusal says it was cut, not FFmpeg's "Invalid data"."""
    try:
        wave, sr = _read(source, kind, limit)
    except UndecodableMedia as err:
        if isinstance(err.__context__, av.error.FFmpegError) and truncation.cut_short(source, kind):
            raise truncation.cut(kind) from None
        raise
    if (wave is not None and not wave.size and kind in media.ONE_CODEC_KINDS) or (
        (wave is None or not wave.size) and kind in media.WAV_KINDS  # its MP3 data: audio, never "none"
    ):
        if truncation.cut_short(source, kind):
            raise truncation.cut(kind)
        raise UndecodableMedia(f"{media.describe(kind)} has no decodable audio frame: corrupt or truncated")
    return wave, sr


def _read(source: media.Source, kind: str, limit: float) -> tuple[np.ndarray | None, int]:
    container = media.open_av(source, kind, mp4index.SampleBounds(max_seconds=limit))
    try:
        track = AvAudio.of(container, kind, limit)
        if track is None:
            return None, contract.SAMPLE_RATE
        demux_all(container, track)
        return track.finish()
    finally:
        container.close()


def demux_all(container, track: AvAudio) -> None:
    """Decode `track` alone to its end (a demuxer error ends it like a decoder error)."""
    try:
        for packet in container.demux(track.stream):
            track.feed(packet)
            if track.ended:
                break
    except av.error.FFmpegError as exc:
        track.stop(exc)


def _declared_end(stream, kind: str) -> float | None:
    """Where the container says `stream` ends on its timeline, in seconds (its start_time plus its duration),
    or None when it says nothing reliable. An MP4/MOV's is the edit list's (FFmpeg's mov demuxer caps the
    stream's duration at the edit's end): the samples the encoder was given, without the priming or the last
    frame's padding. Matroska/WebM declares none per track (None: as decoded); a duration FFmpeg guesses
    from the bit rate (`media.GUESSED_DURATION_KINDS`) is no declaration."""
    if kind in media.GUESSED_DURATION_KINDS or not stream.duration or not stream.time_base:
        return None
    if stream.start_time is None:
        return None
    return float((stream.start_time + stream.duration) * stream.time_base)


def _planar(rate: int) -> av.AudioResampler:
    return av.AudioResampler(format="fltp", rate=rate)


def _mono(planes: np.ndarray) -> np.ndarray:
    """[channels, samples] -> [samples] (`audio.mix_down`; one channel: unchanged, no copy)."""
    return planes[0] if planes.shape[0] == 1 else audio.mix_down(planes, axis=0)


def channels(frame: av.AudioFrame) -> np.ndarray:
    """[channels, samples] of a decoded or resampled audio frame, in its sample format's dtype: planar, one
    plane per channel of its layout; packed, its one interleaved plane split by channel.

    Not `frame.to_ndarray()`: PyAV counts a frame's planes up to the first null pointer, and FFmpeg holds 8
    inline, so an 8-channel planar frame (7.1 AAC, an 8-channel WAV) reports a 9th plane made of the frame's
    line sizes, and reading it segfaulted the process (a gateway replica, by one upload). Only the planes the
    layout names are read, each for the frame's samples (a plane is padded past them)."""
    dtype = SAMPLE_DTYPES[frame.format.name.removesuffix("p")]
    count, samples = len(frame.layout.channels), frame.samples
    if frame.format.is_planar:
        return np.stack([np.frombuffer(plane, dtype, samples) for plane in frame.planes[:count]])
    packed = np.frombuffer(frame.planes[0], dtype, samples * count)
    return np.ascontiguousarray(packed.reshape(samples, count).T)


class AvAudio:
    """The audio track of an open PyAV container, decoded packet by packet: alone (`demux_all`), or in the
    same demux pass as the video track (`avclip`), so a clip's container is opened and read once.

    The track's header is checked when it is found (codec, rate, claimed duration); the decoded length is
    checked as it grows. A decoder error before any sample is UndecodableMedia; after some, the damaged
    tail is dropped and the start is kept (a clip cut off mid-upload is still scoreable).

    Samples are placed by their timestamps, not simply concatenated: a hole in the timestamps (packets a
    recorder dropped) is filled with silence and a stretch that overlaps what was kept is trimmed, so the
    n-th second of the wave is the n-th second after `start` and sound stays beside the face shown with it.
    Differences within `media.TRACK_SLACK_S` are codec framing and left alone; jumps past
    `media.TRACK_BREAK_S` are timestamp breaks (`_place`).

    The wave ends where the container says the track ends (`_declared_end`), not where the codec's last
    frame does: an AAC encoder pads its last 1024-sample frame, and FFmpeg trims the priming at the start (by
    the MP4 edit list) but decodes that padding, so a clip's MP4 decoded 3-60 ms longer than its WAV and a
    3.1-s clip got a second window the WAV never had.
    """

    def __init__(self, stream, kind: str, limit: float) -> None:
        if stream.codec_context is None or not stream.codec_context.sample_rate:
            if kind in media.ONE_CODEC_KINDS:  # the codec is the file type's: its frames are what is broken
                raise UndecodableMedia(
                    f"{media.describe(kind)} has no decodable audio frame: corrupt or truncated"
                )
            raise UnsupportedMedia(f"the audio codec in this {media.describe(kind)} is not supported")
        self.stream, self.kind, self.limit = stream, kind, limit
        self.rate = audio.check_rate(int(stream.codec_context.sample_rate), kind)
        audio.check_channels(int(stream.codec_context.channels or 0), kind)
        claimed = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if audio.over_limit(claimed, limit) and kind not in media.GUESSED_DURATION_KINDS:
            raise audio.too_long(claimed, limit)
        # Planar float at the native rate, channels kept: they are averaged as soundfile's are (sfaudio), not
        # by swresample's matrix (3 dB louder for stereo, 15.5 dB for a 5.1 centre-only voice), so a recording
        # scores the same as WAV and as MP4. The rate change is soxr's job (better filter).
        self._resampler = _planar(self.rate)
        self._input: tuple | None = None  # (rate, layout, format) of the frames the resampler was set up for
        self._wave = np.empty(0, np.float32)  # the samples kept so far, then spare room (`_keep`)
        self._total = 0
        self.start: float | None = None  # the first decoded frame's time on the container's timeline
        self._origin = 0.0  # where sample 0 would be on that timeline (moved by a timestamp break)
        self._trim = 0  # samples still to drop: the next frame overlaps what was kept
        self._silence_s = 0.0  # seconds of silence filled into holes
        self._frame = 0  # samples (at self.rate) of the longest decoded frame: the most padding one holds
        self._end = _declared_end(stream, kind)
        self.ended = False  # an FFmpeg error ended the track: later packets are ignored, no flush

    @classmethod
    def of(cls, container, kind: str, limit: float) -> AvAudio | None:
        """The container's main audio track (`media.main_stream`), checked; None when it has none."""
        stream = media.main_stream(container.streams.audio)
        return None if stream is None else cls(stream, kind, limit)

    def feed(self, packet) -> None:
        """Decode one demuxed packet of this track (the empty packets at the end flush the decoder)."""
        if self.ended:
            return
        try:
            for frame in packet.decode():
                self._follow(frame)
                self._frame = max(self._frame, -(-frame.samples * self.rate // frame.sample_rate))
                self._place(frame.time)
                self._keep(self._resampler.resample(frame))
                if audio.over_limit(self._total / self.rate, self.limit):
                    raise audio.too_long(self._total / self.rate, self.limit, so_far=True)
        except av.error.FFmpegError as exc:
            self.stop(exc)

    def _follow(self, frame) -> None:
        """A resampler set up for this frame: the rate or channel layout may change part-way (two MP3s joined,
        HE-AAC switching to stereo); the old one is flushed and a new one converts to the same output."""
        now = (frame.sample_rate, frame.layout.name, frame.format.name)
        if now == self._input:
            return
        # the first frame's too, not only the header's: `channels` reads as many planes as its layout names
        audio.check_channels(len(frame.layout.channels), self.kind)
        if self._input is not None:
            audio.check_rate(frame.sample_rate, self.kind)
            self._keep(self._resampler.resample(None))
            self._resampler = _planar(self.rate)
        self._input = now

    def _place(self, time: float | None) -> None:
        """Silence for a hole before a frame starting at `time`, or a trim for an overlap (None: unknown).

        A jump past media.TRACK_BREAK_S, or a hole that would make the silence outgrow the sound by more
        than that, is a timestamp break (a recorder's clock reset, one corrupt timestamp), not media that
        went missing: the samples go on where they are. So one bad timestamp neither cuts away every later
        frame nor fills a minute of silence, and a tiny file cannot decode to more silence than sound."""
        if time is None:
            return
        if self.start is None:  # samples kept before the first timestamp (rare) come before it
            self.start = self._origin = float(time) - self._total / self.rate
            return
        ahead = time - (self._origin + self._total / self.rate)
        sound_s = self._total / self.rate - self._silence_s
        if (
            abs(ahead) <= media.TRACK_SLACK_S
            or abs(ahead) > media.TRACK_BREAK_S
            or (ahead > 0 and self._silence_s + ahead > sound_s + media.TRACK_BREAK_S)
        ):
            if abs(ahead) > media.TRACK_SLACK_S:
                self._origin += ahead  # a break: the timeline follows the timestamps from here
            self._trim = 0
            return
        if ahead < 0:
            self._trim = int(round(-ahead * self.rate))
            return
        if audio.over_limit(self._total / self.rate + ahead, self.limit):
            raise audio.too_long(self._total / self.rate + ahead, self.limit, so_far=True)
        self._silence_s += ahead
        self._keep([np.broadcast_to(np.float32(0), (int(round(ahead * self.rate)),))])

    def _keep(self, frames) -> None:
        """Each frame's mono samples written after those kept, into one array grown a quarter at a time
        (realloc, which moves a large block's pages without copying them), so the wave is never held as
        pieces and their join (twice its size) before it is resampled."""
        for out in frames:
            chunk = out if isinstance(out, np.ndarray) else _mono(channels(out))
            if self._trim:
                cut = min(self._trim, chunk.size)
                chunk, self._trim = chunk[cut:], self._trim - cut
            end = self._total + chunk.size
            if end > self._wave.size:
                self._wave.resize(max(end, self._wave.size + self._wave.size // 4, 1 << 14), refcheck=False)
            self._wave[self._total : end] = chunk
            self._total = end

    def stop(self, exc: Exception) -> None:
        """The track ended in an FFmpeg error: UndecodableMedia when nothing decoded, else keep the start."""
        if self._total == 0:
            raise media.av_error(self.kind, exc) from None
        self.ended = True

    def _padding(self) -> int:
        """Samples decoded past the track's declared end: at most one codec frame (the last one's padding;
        FFmpeg drops whole packets past an edit list's end). More, or a track declaring no end, or one that
        went through a timestamp break, is not padding: 0, nothing is cut."""
        if self._end is None or self.start is None:
            return 0
        past = self._total - int(round((self._end - self._origin) * self.rate))
        return past if 0 < past <= self._frame else 0

    def finish(self) -> tuple[np.ndarray, int]:
        """(mono float32 samples at the track's rate, that rate), once: the track lets its wave go (`avclip`
        keeps the track while the wave is resampled)."""
        if not self.ended:
            try:
                self._keep(self._resampler.resample(None))
            except av.error.FFmpegError as exc:
                self.stop(exc)
            self.ended = True
            self._total -= self._padding()
        wave, self._wave = self._wave, np.empty(0, np.float32)
        wave.resize(self._total, refcheck=False)  # the spare room given back (realloc), no copy
        return wave, self.rate
