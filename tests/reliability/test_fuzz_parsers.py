"""Bounded fuzzing (hypothesis) of everything that parses untrusted upload bytes.

The audio decoders (soundfile, PyAV), the video decoder, the landmarks `.npz` reader and the multipart
parser may only succeed or raise an `avpenet.errors.InputError` (which the gateway maps to a 4xx): any other
exception would be a 500 for a hospital integrator and a crash path for an attacker. Inputs are valid
media with bytes flipped, inserted and cut, plus pure noise. Derandomised, so a failure reproduces.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import testmedia

from avpenet import contract
from avpenet.errors import InputError
from avpenet.features import audio, tracker
from avpenet.features.track import FaceTrack
from avpenet.features.tracker import VideoLimits

FUZZ = settings(
    max_examples=250,
    deadline=timedelta(seconds=5),
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
LIMIT_S = 20.0


@functools.cache
def seeds() -> dict[str, bytes]:
    from support.gateway import face_track

    tone = testmedia.tone(1.0, contract.SAMPLE_RATE)
    frames = testmedia.noise_frames(6, size=(48, 32))
    return {
        "wav": testmedia.audio_bytes(tone, contract.SAMPLE_RATE),
        "flac": testmedia.audio_bytes(tone, contract.SAMPLE_RATE, fmt="FLAC"),
        "ogg": testmedia.audio_bytes(tone, contract.SAMPLE_RATE, fmt="OGG"),
        "aiff": testmedia.audio_bytes(tone, contract.SAMPLE_RATE, fmt="AIFF"),
        "caf": testmedia.audio_bytes(tone, contract.SAMPLE_RATE, fmt="CAF"),
        "w64": testmedia.audio_bytes(tone, contract.SAMPLE_RATE, fmt="W64"),
        "amr": testmedia.amr_nb_bytes(testmedia.tone(1.0, 8000)),
        "mp4": testmedia.video_bytes(frames, 10, audio=testmedia.tone(0.6, contract.SAMPLE_RATE)),
        "mkv": testmedia.video_bytes(frames, 10, container="matroska"),
        "npz": face_track(0.3).to_npz_bytes(),  # 3 frames: a short repr when a case fails
    }


@st.composite
def mutated(draw, kind: str) -> bytes:
    """A seed file with a few bytes overwritten, a run inserted, and maybe cut short."""
    data = bytearray(seeds()[kind])
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def only_input_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except InputError:
        return None


@FUZZ
@given(
    st.one_of(
        *(mutated(kind) for kind in ("wav", "flac", "ogg", "aiff", "caf", "w64", "amr", "mp4")),
        st.binary(max_size=2048),
    )
)
def test_audio_decoder(blob):
    wave = only_input_errors(audio.load_audio, blob, name="fuzz.bin", max_seconds=LIMIT_S)
    if wave is not None:
        assert wave.dtype == np.float32 and wave.ndim == 1 and np.all(np.isfinite(wave))
        assert len(wave) <= (LIMIT_S + 1) * contract.SAMPLE_RATE


@FUZZ
@given(st.one_of(mutated("mp4"), mutated("mkv"), st.binary(max_size=2048)))
def test_video_decoder(blob):
    limits = VideoLimits(max_seconds=LIMIT_S, max_pixels=640 * 480)
    frames = only_input_errors(lambda: list(tracker.iter_video_frames(blob, limits)))
    if frames:
        assert len(frames) <= limits.frame_limit
        assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames)


@FUZZ
@given(st.one_of(mutated("npz"), st.binary(max_size=2048)))
def test_landmarks_npz_reader(blob):
    max_frames = int(LIMIT_S * contract.FPS)
    track = only_input_errors(FaceTrack.load_npz, blob, max_frames=max_frames)
    if track is not None:
        assert track.n_frames <= max_frames and np.all(np.isfinite(track.landmarks))


MULTIPART_SEED = (
    b'--BOUNDARY\r\nContent-Disposition: form-data; name="age_group"\r\n\r\nadult\r\n'
    b'--BOUNDARY\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\nRIFF0000WAVEfmt \r\n--BOUNDARY--\r\n"
)


@st.composite
def multipart_bodies(draw) -> bytes:
    data = bytearray(MULTIPART_SEED)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.sampled_from(b'-\r\n"=;:\x00\xff BOUNDARY'))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=32))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(
    body=st.one_of(multipart_bodies(), st.binary(max_size=512)),
    content_type=st.sampled_from([
        "multipart/form-data; boundary=BOUNDARY", "multipart/form-data; boundary=\"BOUNDARY\"",
        "multipart/form-data", "multipart/form-data; boundary=", "text/plain", "", "multipart/mixed; b=1",
    ]),
)  # fmt: skip
def test_multipart_parser(body, content_type):
    from preprocess_service.multipart import parse_score_form

    request = only_input_errors(parse_score_form, body, content_type, "fuzz")
    if request is not None:
        only_input_errors(request.validate_combination)


@pytest.mark.parametrize("kind", ["wav", "flac", "ogg", "aiff", "caf", "w64", "amr", "mp4", "mkv", "npz"])
def test_seeds_are_valid_media(kind):
    """The fuzzers start from media that decodes, so mutations explore the decoders, not just the sniffer."""
    blob = seeds()[kind]
    if kind == "npz":
        assert FaceTrack.load_npz(blob).n_frames == 3
    elif kind == "mkv":
        assert len(list(tracker.iter_video_frames(blob))) > 0
    else:
        assert audio.load_audio(blob) is not None
