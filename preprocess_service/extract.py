"""Decode an upload and build its batched model inputs with the shared feature code (the CPU-heavy stage).

Each audio sample and video frame is decoded and face-tracked once for the whole clip; `windows.model_inputs`
then cuts the shared wave and track into overlapping 3 s windows. Runs synchronously: callers put it on a
worker thread (or in the FeatureExtractor deployment) so no event loop ever blocks on decoding. Bytes stay in
memory; nothing is written to disk.

Stages as timed and traced: `decode` = decoding a separate audio upload and parsing a landmarks file;
`features` = video decoding with face tracking (one pass over the frames) and window building. A `clip` (one
container with sound and picture) is opened and demuxed once (`avpenet.features.avclip`): its audio is decoded
in the same pass as its video, so it is timed under `features`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from avpenet import contract
from avpenet.errors import InputError, NothingToScore, UndecodableMedia
from preprocess_service import masking, telemetry
from preprocess_service.errors import report_processed
from preprocess_service.limits import check_duration
from preprocess_service.protocol import ScoreRequest
from preprocess_service.settings import Limits

if TYPE_CHECKING:
    from avpenet.features.track import FaceTrack


@dataclass
class Extracted:
    inputs: dict[str, np.ndarray]  # contract input name -> [N windows, ...]
    duration_s: float
    modalities: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)
    masked: dict[str, str] = field(default_factory=dict)  # modality -> why it was not used (masking.py)

    @property
    def n_windows(self) -> int:
        return int(len(self.inputs[contract.AUDIO_PRESENT.name]))


def extract(
    request: ScoreRequest,
    limits: Limits,
    carrier: Mapping[str, str] | None = None,
    *,
    stop: Callable[[], bool] | None = None,
) -> Extracted:
    """Model inputs for one request; raises `avpenet.errors.InputError` subclasses for bad media.

    `stop` (asked before each decoded video frame) ends the work with `tracker.Stopped` once the caller no
    longer waits for it (its deadline passed, or it was cancelled): refused work stops costing CPU."""
    from avpenet.features import audio, avclip, tracker
    from avpenet.features.track import FaceTrack

    tracer = telemetry.tracer()
    parent = telemetry.extract_context(carrier or {})
    timings: dict[str, float] = {}
    video_limits = tracker.VideoLimits(
        max_seconds=limits.max_duration_s,
        max_pixels=limits.max_pixels,
        stop=stop,
        track_every=limits.track_every,
    )
    if stop is not None and stop():  # given up while it waited for a thread
        raise tracker.Stopped("the caller stopped waiting before extraction started")
    max_frames = int(limits.max_duration_s * contract.FPS)

    wave = track = None
    t0 = time.perf_counter()
    with tracer.start_as_current_span("decode", context=parent) as span:
        sound = request.audio  # a clip's sound is decoded with its picture, below
        if sound is not None:
            wave = audio.load_audio(sound.data, name=sound.filename, max_seconds=limits.max_duration_s)
        if request.landmarks is not None:
            track = FaceTrack.load_npz(request.landmarks.data, max_frames=max_frames)
        span.set_attribute("avpenet.audio_seconds", 0.0 if wave is None else len(wave) / contract.SAMPLE_RATE)
    timings["decode"] = (time.perf_counter() - t0) * 1000.0

    t1 = time.perf_counter()
    with tracer.start_as_current_span("features", context=parent) as span:
        if request.clip is not None:
            clip = request.clip
            wave, track = avclip.decode_clip(
                clip.data, video_limits, name=clip.filename, max_audio_seconds=limits.max_duration_s
            )
        elif request.video is not None:
            track = tracker.track_video(request.video.data, video_limits)
        duration = max(
            0.0 if wave is None else len(wave) / contract.SAMPLE_RATE,
            0.0 if track is None else track.duration_s,
        )
        try:
            inputs = _model_inputs(request, wave, track, duration, limits)
        except InputError as exc:  # refused after the decode: video admission credits what it cost
            report_processed(exc, duration)
            raise
        span.set_attribute("avpenet.windows", int(len(inputs[contract.AUDIO_PRESENT.name])))
    timings["features"] = (time.perf_counter() - t1) * 1000.0
    modalities, masked = masking.apply(inputs, wave, track)
    return Extracted(inputs, duration, modalities, timings, masked)


def _model_inputs(
    request: ScoreRequest, wave: np.ndarray | None, track: FaceTrack | None, duration: float, limits: Limits
) -> dict[str, np.ndarray]:
    """The decoded clip's model inputs, or the InputError that says why it cannot be scored."""
    from avpenet.features import windows

    check_duration(duration, limits.max_duration_s)
    if wave is None and track is None:
        raise NothingToScore("no audio track found; send audio or a video with sound")
    # The feature code's usability check decides, not the face_present flag: a track of collapsed,
    # off-frame or frozen landmarks has "a face" in every frame and nothing a model can read.
    inputs = windows.model_inputs(wave, track, request.age_group, served=True)
    poisoned = [k for k, v in inputs.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if poisoned:  # the decoders check every step; this is the last gate before Triton
        raise UndecodableMedia(f"the upload gave non-finite {', '.join(poisoned)}; it cannot be scored")
    face = bool(np.any(inputs[contract.FRAME_MASK.name]))
    if face or np.any(inputs[contract.AUDIO_PRESENT.name]):
        return inputs
    if wave is None:  # no window holds either modality: one would be scored from nothing
        raise NothingToScore(
            "no usable face in any frame (none found, or landmarks collapsed, outside the frame or "
            "frozen) and no audio; send audio, or video where a face is visible"
        )
    seconds = np.asarray(wave).size / contract.SAMPLE_RATE  # at most the tail no window counts as sound
    raise NothingToScore(
        f"the audio lasts {seconds:.2f} s, too short to score (more than "
        f"{contract.WINDOW_TAIL_TOLERANCE_S:g} s is needed), and "
        + ("the upload has no face track" if track is None else "no frame has a usable face")
        + "; send a longer recording (3 s or more where you can)"
    )
