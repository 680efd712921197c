"""Gaps in a stream: frames that carry their capture time (`t`) go in their own slot, so a camera stall stays
a stall; a modality lost for minutes is realigned when it returns without holding its gap.

Without `t` each frame takes the next 1/FPS slot, so after a stall shorter than signal_timeout_s the frames
trail the audio by the stall for the rest of the stream. These tests run the stream state and the receipt
accounting without a server; test_stream_gateway.py replays recordings with `t` through the real stack.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.stream import protocol
from preprocess_service.stream.inbound import Item, ahead_s, unaccept
from preprocess_service.stream.protocol import Start, StreamRejected, encode_chunk, parse_chunk
from preprocess_service.stream.state import StreamState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEP = contract.SAMPLES_PER_FRAME
SOUND = memoryview(np.full(STEP, 0.01, "<f4").tobytes())


def landmarks_stream(**kw) -> tuple[StreamState, FaceTrack]:
    track = FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())
    size = tuple(int(v) for v in track.image_size)
    start = Start(type="start", mode="landmarks", age_group="adult", image_size=size, **kw)
    return StreamState(start, max_pixels=10**7), track


def frame(track: FaceTrack, k: int) -> memoryview:
    k %= track.n_frames
    return memoryview(protocol.landmark_frame_bytes(track, k))


def same_inputs(one, other) -> bool:
    return all(np.array_equal(one.inputs[name], other.inputs[name]) for name in other.inputs)


@pytest.mark.parametrize("times", [True, False], ids=["with-t", "without-t"])
def test_a_short_camera_stall_keeps_the_frames_level_with_the_audio_only_with_capture_times(times):
    """No frames from 5.0 to 7.0 s (under the 3 s timeout), audio throughout. With `t` every window equals
    that of a stream that sent the stall as frames without a face; without it the frames trail by 2 s."""
    stall = range(50, 70)
    windows_of = {}
    for sends_gap in (False, True):
        state, track = landmarks_stream()
        cut = windows_of[sends_gap] = {}
        for tick in range(150):
            header = {"t": tick / contract.FPS} if times else {}
            if tick not in stall:
                state.add_frame(header, frame(track, tick))
            elif sends_gap:
                state.add_dropped_frame(header)
            state.add_audio({}, SOUND)
            cut.update((w.index, w) for w in state.ready())
        for w in state.finish():
            cut[w.index] = w
        lag = state.audio_s - state.frames_s
        if not sends_gap:
            assert lag == pytest.approx(0.0 if times else 2.0, abs=1e-9)
    same = [same_inputs(w, windows_of[True][i]) for i, w in windows_of[False].items()]
    assert len(same) == len(windows_of[True]) >= 10
    assert all(same) if times else not all(same)


@pytest.mark.parametrize("lost", ["visual", "audio"])
def test_a_modality_back_after_minutes_is_realigned_without_holding_the_gap(lost):
    """The camera (or the microphone) is gone for two minutes while the other modality streams on. When it
    returns, the windows read the gap as faceless (unheard), exactly as a stream that sent that gap, but the
    gap is not held: it used to be allocated whole at the return (an hour without a camera: 239 MB at once).
    The first stream loses the modality; the second sends the gap as frames without a face (as audio chunks
    refused, whose silence nobody heard: samples.Unheard)."""
    import tracemalloc

    silence = memoryview(np.zeros(STEP, "<f4").tobytes())
    gone, back = range(50, 1250), 1250  # 100 ms ticks: 5 s, then 120 s without `lost`
    windows_of = {}
    for sends_gap in (False, True):
        state, track = landmarks_stream()
        cut = windows_of[sends_gap] = {}
        for tick in range(back + 60):
            missing = tick in gone
            if tick == back:
                tracemalloc.start()
            # the lost modality first in a tick: a returning one is placed level with the other's last chunk
            if lost == "visual":
                if not missing:
                    state.add_frame({}, frame(track, 0))
                elif sends_gap:
                    state.add_dropped_frame({})  # a frame without a face
                state.add_audio({}, SOUND)
            else:
                if not missing:
                    state.add_audio({}, SOUND)
                elif sends_gap:
                    state.refuse_audio({}, len(silence))
                state.add_frame({}, frame(track, 0))
            for w in state.ready():
                cut[w.index] = (tick, w)
            if tick == back:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        assert abs(state.audio_s - state.frames_s) <= 0.15
        if not sends_gap:
            assert peak < 2**20, f"the return allocated {peak / 2**20:.1f} MiB"  # held: 8-15 MiB
    after = [i for i, (tick, _) in windows_of[False].items() if tick >= back]
    assert len(after) >= 5
    assert all(same_inputs(windows_of[False][i][1], windows_of[True][i][1]) for i in after)


def test_a_frame_in_a_slot_already_filled_is_refused_and_skipped():
    state, track = landmarks_stream()
    state.add_frame({"t": 0.0}, frame(track, 0))
    state.add_frame({"t": 0.1}, frame(track, 1))
    for t in (0.1, 0.06, 0.0):  # 0.06 rounds to slot 1
        with pytest.raises(StreamRejected, match="already filled") as behind:
            state.add_frame({"t": t}, frame(track, 2))
        assert behind.value.code == "frame_time_behind"
    assert state.n_frames == 2
    state.add_frame({"t": 0.2}, frame(track, 2))
    assert state.n_frames == 3


@pytest.mark.parametrize("t", [-0.1, float("nan"), float("inf"), 10**400, 2e9, True, "1.0", [1]])
def test_a_capture_time_that_is_not_one_is_refused_on_receipt(t):
    received = {"audio": 0.0, "frame": 0.0}
    with pytest.raises(StreamRejected) as bad:
        ahead_s(received, {"kind": "frame", "seq": 0, "t": t}, 100, 16000, time.monotonic())
    assert bad.value.code == "bad_frame_time"
    assert received == {"audio": 0.0, "frame": 0.0}  # nothing counted for a refused chunk


def test_a_jump_in_capture_time_counts_toward_the_flood_limit_and_is_given_back():
    """A frame claiming t = 100 s one second after the stream opened is media 100 s ahead of real time (the
    session closes such a sender 4409). Given back unprocessed, the count returns to its capture time at the
    latest, where its resend takes it again (what the stream reached before a jump is not kept)."""
    received = {"audio": 0.0, "frame": 0.0}
    ahead = ahead_s(received, {"kind": "frame", "seq": 0, "t": 100.0}, 10, 16000, time.monotonic() - 1.0)
    assert 98.5 < ahead < 100.2
    item = Item("frame", {"kind": "frame", "seq": 0, "t": 100.0}, b"x" * 10, time.monotonic())
    next_seq = {"audio": 0, "frame": 1}
    assert unaccept([item], next_seq, received, 16000) == {"audio": 0, "frame": 1}
    assert next_seq["frame"] == 0 and received["frame"] == pytest.approx(100.0)


def test_a_jump_past_the_timeout_without_audio_is_cut_and_later_frames_keep_the_cut():
    """A stream without audio has nothing to keep level with: an hour-long jump in `t` (a camera back after
    an hour, or a wrong clock) becomes a gap of signal_timeout_s, not 36,000 frames without a face."""
    state, track = landmarks_stream(audio=False)
    for k in range(30):
        state.add_frame({"t": k / contract.FPS}, frame(track, k))
        state.ready()
    state.add_frame({"t": 3600.0}, frame(track, 30))
    timeout_slots = round(state.start.config.signal_timeout_s * contract.FPS)
    assert state.n_frames == 30 + timeout_slots + 1
    assert len(state.frames) <= contract.FRAMES_PER_WINDOW + timeout_slots + 1
    state.add_frame({"t": 3600.1}, frame(track, 31))  # the next slot, after the cut
    assert state.n_frames == 30 + timeout_slots + 2
    with pytest.raises(StreamRejected):
        state.add_frame({"t": 3600.1}, frame(track, 32))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(t=JSON)
def test_any_json_as_a_capture_time_is_placed_or_refused_never_a_crash(t):
    """Whatever a header carries as `t` (through the wire's JSON, NaN and huge integers included), receipt
    and placement either take the frame or refuse it with a stream error code; the stream stays usable."""
    state, track = landmarks_stream(audio=False)
    received = {"audio": 0.0, "frame": 0.0}
    try:
        header, _ = parse_chunk(encode_chunk({"kind": "frame", "seq": 0, "t": t}, b""))
        ahead_s(received, header, 0, 16000, time.monotonic())
        state.add_frame(header, frame(track, 0))
    except StreamRejected as exc:  # garbage: a header past its 1 KiB bound
        assert exc.code in ("bad_frame_time", "frame_time_behind", "garbage")
    assert state.n_frames <= 1 + state.clock.max_jump
    state.add_frame({}, frame(track, 1))  # the next frame without a time: the stream goes on
