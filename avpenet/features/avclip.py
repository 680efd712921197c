"""One upload carrying both modalities (a `clip`: MP4/MOV/WebM/MKV with sound) decoded in ONE pass.

Decoding the audio with `audio.load_audio` and then the video with `tracker.track_video` opened the container
twice: two copies of the bytes in memory, two walks of an MP4's sample tables, two FFmpeg indexes and two
reads of every packet. Here the container is opened once (`media.open_av`, with every check it makes) and
demuxed once: each audio packet goes to `avaudio.AvAudio`, each video packet is decoded and handed to the
tracker's sampler as it comes, so the face is tracked while the file is read.

Same answers as the two calls: the same checks and errors (the audio track's header first, then the video's),
and a damaged tail handled per track (a video decode error is held back until the audio has been read to the
end, as the separate audio pass read it; a demuxer error ends both tracks where it occurs, as it ended both
passes). Content that is not an audio+video container goes through the two calls unchanged, so it is refused
with the same reasons.

Both tracks are put on one timeline: a container's audio may start after its video (a recorder that opens
the microphone late, a cut made at a video keyframe) or before it. The track that starts later is led in from
the earlier start, with silence or with frames where no face is seen, so the wave's second n and the face
track's second n are the same moment of the recording (`_line_up`).
"""

from __future__ import annotations

from collections.abc import Iterator

import av
import numpy as np

from avpenet import contract
from avpenet.errors import TooLarge
from avpenet.features import audio, avaudio, media, mp4index, tracker
from avpenet.features.track import FaceTrack


def decode_clip(
    source: media.Source,
    limits: tracker.VideoLimits,
    *,
    name: str | None = None,
    max_audio_seconds: float | None = None,
) -> tuple[np.ndarray | None, FaceTrack | None]:
    """(16 kHz mono wave or None, FaceTrack or None) of an upload, opening its container once.

    Raises what `audio.load_audio` (`name`, `max_audio_seconds`) and `tracker.track_video` raise for the
    same bytes."""
    audio_limit = audio.DEFAULT_MAX_SECONDS if max_audio_seconds is None else float(max_audio_seconds)
    head = media.read_head(source)
    kind = media.sniff(head)
    if kind not in media.AV_CONTAINER_KINDS:
        wave = audio.load_audio(source, name=name, max_seconds=audio_limit)
        return wave, tracker.track_video(source, limits)
    audio_bounds = mp4index.SampleBounds(max_seconds=audio_limit)
    video_bounds = tracker.sample_bounds(limits)
    if kind == "isobmff" and audio_bounds != video_bounds:  # both bounds hold, the audio's checked first
        mp4index.check_sample_tables(source, audio_bounds)
    container = media.open_av(source, kind, video_bounds)
    try:
        track_audio = avaudio.AvAudio.of(container, kind, audio_limit)
        track, first = None, _FirstTime()
        video = media.main_stream(container.streams.video)
        if video is not None:
            frames = first.of(_video_frames(container, video, track_audio))
            with tracker.pooled() as face_tracker:
                track = face_tracker.track_sampled(
                    tracker.sample_frames(container, kind, limits, frames), limits.track_every
                )
            _drain(frames)
        elif track_audio is not None:
            avaudio.demux_all(container, track_audio)
        wave = None
        if track_audio is not None:
            wave = audio.to_model_rate(*track_audio.finish(), kind)
            if track is not None:
                wave, track = _line_up(wave, track_audio.start, track, first.time, audio_limit, limits)
            wave = audio.cut_to(wave, audio_limit)
    finally:
        container.close()
    return wave, track


class _FirstTime:
    """The time of the first frame that passes through `of` (None: none passed, or it had no timestamp)."""

    def __init__(self) -> None:
        self.time: float | None = None
        self._seen = False

    def of(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        for frame in frames:
            if not self._seen:
                self._seen, self.time = True, frame.time
            yield frame


def _line_up(
    wave: np.ndarray | None,
    audio_start: float | None,
    track: FaceTrack,
    video_start: float | None,
    audio_limit: float,
    limits: tracker.VideoLimits,
) -> tuple[np.ndarray | None, FaceTrack]:
    """The wave and the track from the earlier of their two starts: the later one is led in with silence
    (audio) or with frames where no face is seen (video). Starts within media.TRACK_SLACK_S, or a start
    without a timestamp, are left as they are; a lead-in that takes the clip past a limit is cut to it
    within media.DURATION_GRACE_S and refused beyond."""
    if wave is None or audio_start is None or video_start is None:
        return wave, track
    lead = audio_start - video_start
    if abs(lead) <= media.TRACK_SLACK_S:
        return wave, track
    if lead > 0:
        seconds = lead + wave.size / contract.SAMPLE_RATE
        if audio.over_limit(seconds, audio_limit):
            raise audio.too_long(seconds, audio_limit)
        silence = np.zeros(int(round(lead * contract.SAMPLE_RATE)), np.float32)
        return np.concatenate([silence, wave]), track
    frames = int(round(-lead * contract.FPS))
    if frames + track.n_frames > limits.grace_frame_limit:
        raise TooLarge(
            f"the video starts {-lead:.1f} s after the audio and the clip then lasts over "
            f"{limits.max_seconds:g} s, the limit"
        )
    led = FaceTrack.concat([FaceTrack.empty(frames, tuple(track.image_size)), track])
    return wave, led.head(limits.frame_limit)  # within the grace: cut, as audio is


def _drain(frames: Iterator[av.VideoFrame]) -> None:
    """Read the rest of the pass for the audio: normally spent already (the sampler reads to the end)."""
    try:
        for _ in frames:
            pass
    except av.error.FFmpegError:  # the video's own error, after its track was decided: the audio is read
        pass


def _video_frames(container, video, track_audio: avaudio.AvAudio | None) -> Iterator[av.VideoFrame]:
    """Decoded frames of `video`, demuxed in the same pass as the audio track, which is decoded on the way."""
    streams = [video] if track_audio is None else [video, track_audio.stream]
    held: av.error.FFmpegError | None = None  # a video decode error, raised once the audio is read
    try:
        for packet in container.demux(*streams):
            if packet.stream.index != video.index:
                track_audio.feed(packet)
            elif held is None:
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:
                    held = exc
                    continue
                yield from decoded
    except av.error.FFmpegError as exc:  # the demuxer failed: both tracks end here
        if track_audio is not None and not track_audio.ended:
            track_audio.stop(exc)
        if held is not None:  # the video had already ended on its own error
            raise held from None
        raise
    if held is not None:
        raise held
