"""The feature code's masking rules give a window the same answer whether its clip is uploaded whole or
streamed: silent audio beside a face (features.windows.silent_windows) and still landmarks
(features.visual's still runs, read by the stream with the frames around each window: stream/faces.py).

Each case replays a recording through the stream's state tick by tick, as a device sends it, and compares
every window's model inputs with the clip path's (windows.model_inputs: the clip endpoint, training and
evaluation), so the window scores are the same; masking.apply names what the clip answer reports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.stream_feed import feed, start

from avpenet import contract
from avpenet.features import audio, visual, windows
from avpenet.features.track import FaceTrack
from preprocess_service import masking
from preprocess_service.stream import protocol
from preprocess_service.stream.state import StreamState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example() -> tuple[np.ndarray, FaceTrack]:
    wave = audio.load_audio((EXAMPLES / "adult-S0003-C02.wav").read_bytes())
    return wave, FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())


def _streamed(wave: np.ndarray | None, track: FaceTrack) -> list:
    size = tuple(int(v) for v in track.image_size)
    return feed(StreamState(start(image_size=size, audio=wave is not None), 10**7), wave, track)


def _same_windows(wave: np.ndarray | None, track: FaceTrack) -> dict[str, np.ndarray]:
    """Assert the stream's windows are the clip's, input by input; the clip's inputs."""
    clip = windows.model_inputs(wave, track, "adult", served=True)
    got = _streamed(wave, track)
    assert [w.index for w in got] == list(range(len(clip[contract.AUDIO_PRESENT.name])))
    model = windows.model_inputs_of(clip)
    as_windows = [windows.model_inputs_of(w.inputs) for w in got]
    for name, expected in model.items():
        streamed = np.concatenate([w[name] for w in as_windows])
        np.testing.assert_allclose(streamed, expected, atol=1e-6, err_msg=name)
    return clip


def _frozen(track: FaceTrack, frames: slice) -> FaceTrack:
    """The device repeats the landmarks (blendshapes, pose) of the slice's first frame over the slice."""
    arrays = {k: v.copy() for k, v in track.arrays().items()}
    for name in ("landmarks", "blendshapes", "head_pose"):
        arrays[name][frames] = arrays[name][frames.start]
    return FaceTrack(**arrays)


def _hiss(track: FaceTrack, level_db: float | None) -> np.ndarray:
    n = track.n_frames * contract.SAMPLES_PER_FRAME
    if level_db is None:
        return np.zeros(n, np.float32)
    return (np.random.default_rng(0).standard_normal(n) * 10 ** (level_db / 20)).astype(np.float32)


@pytest.mark.parametrize("level_db", [None, -90.0])
def test_silent_audio_beside_a_face_is_masked_alike_streamed_or_whole(level_db):
    """Digital silence (a muted input): was masked by the clip endpoint only (3.751, moderate), the stream
    and evaluation scored it as sound (2.851, low)."""
    _, track = _example()
    wave = _hiss(track, level_db)
    clip = _same_windows(wave, track)
    assert not clip[contract.AUDIO_PRESENT.name].any() and clip[contract.FRAME_MASK.name].any()
    used, masked = masking.apply(clip, wave, track)
    assert used == ["visual"] and masked == {"audio": masking.SILENT}


@pytest.mark.parametrize("level_db", [-70.0, -62.0])
def test_a_quiet_room_beside_a_face_is_audio_alike_streamed_or_whole(level_db):
    """Was: masked by the clip endpoint only (3.751), scored as audio by the stream and evaluation (2.779)."""
    _, track = _example()
    wave = _hiss(track, level_db)
    clip = _same_windows(wave, track)
    assert clip[contract.AUDIO_PRESENT.name].all()
    assert masking.apply(clip, wave, track) == (["audio", "visual"], {})


def test_audio_silent_in_some_windows_is_masked_there_only():
    wave, track = _example()
    wave = wave.copy()
    wave[3 * contract.SAMPLE_RATE :] = 0.0  # the microphone goes silent after 3 s
    clip = _same_windows(wave, track)
    present = clip[contract.AUDIO_PRESENT.name][:, 0]
    assert present[0] == 1 and present[-1] == 0
    assert masking.apply(clip, wave, track) == (["audio", "visual"], {})  # the clip answer used the audio


def test_landmarks_frozen_for_3_s_mid_clip_are_masked_alike_streamed_or_whole():
    """Was: the clip endpoint used all 30 frames of window 1 (3.860), the stream none (3.197)."""
    wave, track = _example()
    still = _frozen(track, slice(10, 40))  # frames 10-39: the device repeats frame 10
    clip = _same_windows(wave, still)
    mask = visual.usable_frames(still)
    assert mask[10] and not mask[11:40].any() and mask[:10].all() and mask[40:].all()
    assert clip[contract.FRAME_MASK.name][1].sum() == 1  # window 1 (frames 10-39): frame 10 only


@pytest.mark.parametrize("frames", [slice(25, 36), slice(0, 15), slice(45, 55)])
def test_a_still_run_across_a_window_edge_is_masked_alike(frames):
    """A run straddling a window's last frame, one from the first frame, one ending the clip."""
    _, track = _example()
    _same_windows(None, _frozen(track, frames))


def test_a_whole_frozen_track_is_still_unusable_streamed_or_whole():
    _, track = _example()
    frozen = _frozen(track, slice(0, track.n_frames))
    clip = _same_windows(None, frozen)
    assert not clip[contract.FRAME_MASK.name].any()
    assert masking.apply(clip, None, frozen)[1]["visual"] == masking.UNUSABLE_FACE
    assert not any(w.visual_ok for w in _streamed(None, frozen))


def _windows_cut(track: FaceTrack, ticks: int) -> int:
    state = StreamState(start(audio=False, image_size=tuple(int(v) for v in track.image_size)), 10**7)
    cut = 0
    for k in range(ticks):
        state.check_seq("frame", k)
        state.add_frame({}, memoryview(protocol.landmark_frame_bytes(track, k)))
        cut += len(state.ready())
    return cut


def test_a_window_waits_only_while_a_still_run_at_its_end_is_undecided():
    """A moving face: window 0 is cut with its 30th frame, no later. A still run reaching into window 0's
    last frames: cut once the run is decided (here at its FROZEN_MIN_FRAMES-th frame), not before."""
    _, track = _example()
    assert _windows_cut(track, 30) == 1
    still = _frozen(track, slice(27, 27 + visual.FROZEN_MIN_FRAMES))  # frames 28-29 copies of frame 27
    assert _windows_cut(still, 27 + visual.FROZEN_MIN_FRAMES - 1) == 0
    assert _windows_cut(still, 27 + visual.FROZEN_MIN_FRAMES) == 1
    moved = _frozen(track, slice(27, 33))  # a short still: decided when the face moves at frame 33
    assert _windows_cut(moved, 33) == 0 and _windows_cut(moved, 34) == 1


def test_frame_features_read_with_their_context_are_the_whole_tracks():
    """What the stream relies on: a window's rows computed on the frames within CONTEXT_FRAMES of it."""
    _, track = _example()
    track = _frozen(_frozen(track, slice(5, 20)), slice(31, 45))
    whole_feats, whole_mask = visual.frame_features(track)
    c = visual.CONTEXT_FRAMES
    for f0 in range(0, track.n_frames, contract.FRAMES_PER_HOP):
        lo, hi = max(f0 - c, 0), min(f0 + contract.FRAMES_PER_WINDOW + c, track.n_frames)
        part = replace(track, **{k: v[lo:hi] for k, v in track.arrays().items() if k != "image_size"})
        feats, mask = visual.frame_features(part)
        rows = slice(f0 - lo, min(f0 + contract.FRAMES_PER_WINDOW, track.n_frames) - lo)
        np.testing.assert_array_equal(mask[rows], whole_mask[f0 : f0 + contract.FRAMES_PER_WINDOW])
        # per frame, so equal; atol as the other comparisons here, in case a CPU's kernels differ with length
        np.testing.assert_allclose(feats[rows], whole_feats[f0 : f0 + contract.FRAMES_PER_WINDOW], atol=1e-6)
