"""A chunk refused after its seq was accepted keeps its time on the stream's timeline: a refused audio chunk
is silence of its length, a refused frame a frame without a face (in its `t` slot when it has one).

Before, the refused chunk was simply missing: three audio chunks with a NaN (a DSP glitch) left the audio
0.3 s behind the frames for the rest of the stream (up to `signal_timeout_s`), every later window pairing
sound and face 0.3 s apart, and the chunk could not be resent (its seq was taken).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.stream_session import TICK, Socket, audio, frame, hub, open_stream, run, text

from avpenet import contract
from avpenet.features import windows
from avpenet.features.track import FaceTrack
from preprocess_service.stream import protocol
from preprocess_service.stream.protocol import CLOSE_NORMAL, Start, StreamRejected
from preprocess_service.stream.session import Session
from preprocess_service.stream.state import StreamState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRACK = FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())
SIZE = tuple(int(v) for v in TRACK.image_size)


def landmarks(k: int) -> bytes:
    return protocol.landmark_frame_bytes(TRACK, k % TRACK.n_frames)


def broken_landmarks() -> bytes:
    values = np.frombuffer(landmarks(0), "<f4").copy()
    values[0] = np.nan
    return values.tobytes()


def stream(**kw) -> StreamState:
    start = Start(type="start", mode="landmarks", age_group="adult", image_size=SIZE, **kw)
    return StreamState(start, 10**7)


def test_refused_audio_chunks_are_silence_of_their_length_and_the_audio_stays_level():
    state, cut, glitches = stream(), [], (20, 40, 60)
    for k in range(100):
        state.check_seq("audio", k)
        wave = np.full(TICK, 0.01, "<f4")
        wave[0] = np.nan if k in glitches else wave[0]
        try:
            state.add_audio({}, memoryview(wave.tobytes()))
        except StreamRejected as exc:
            assert exc.code == "bad_audio" and k in glitches
        state.check_seq("frame", k)
        state.add_frame({}, memoryview(landmarks(k)))
        cut += state.ready()
    assert state.audio_s == state.frames_s == 10.0  # before: 9.7 against 10.0
    sound = windows.model_inputs_of(cut[0].inputs)[contract.WAVEFORM.name][0]  # 0-3 s
    assert not sound[20 * TICK : 21 * TICK].any() and sound[19 * TICK : 20 * TICK].all()
    assert sound[21 * TICK : 22 * TICK].all()


@pytest.mark.parametrize(
    ("header", "samples", "seconds"),
    [({"rate": 8000}, 800, 0.1), ({}, 3 * 16000, 2.0), ({"rate": "x"}, 1600, 0.1)],
    ids=["rate_changed", "too_long", "rate_not_a_number"],
)
def test_a_refused_audio_chunk_counts_its_own_duration(header, samples, seconds):
    state = stream(audio=True)
    with pytest.raises(StreamRejected):
        state.add_audio(header, memoryview(np.zeros(samples, "<f4").tobytes()))
    assert state.audio_s == pytest.approx(seconds)


def test_a_refused_frame_is_a_frame_without_a_face_in_its_slot():
    state = stream()
    for k in range(3):
        state.add_frame({}, memoryview(landmarks(k)))
    with pytest.raises(StreamRejected, match="NaN"):
        state.add_frame({}, memoryview(broken_landmarks()))  # no `t`: the next slot
    with pytest.raises(StreamRejected, match="NaN"):
        state.add_frame({"t": 0.6}, memoryview(broken_landmarks()))  # its slot, 4 and 5 faceless before it
    state.add_frame({}, memoryview(landmarks(7)))  # the next slot: 7
    assert state.n_frames == 8
    assert [bool(f.face_present[0]) for f in state.frames] == [True] * 3 + [False] * 4 + [True]


def test_a_frame_refused_on_receipt_keeps_its_slot_and_the_next_one_is_taken():
    """A `t` that is not a time is refused as the frame arrives; the frame still takes the next slot."""
    the_hub = hub()
    entry = open_stream(the_hub, mode="landmarks", image_size=list(SIZE))
    messages = []
    for k in range(40):
        header = {"seq": k, "t": "soon"} if k == 5 else {"seq": k}
        messages += [audio(k), frame(header, landmarks(k))]
    socket = Socket([*messages, text({"type": "end"})])
    assert run(the_hub, entry, socket) == CLOSE_NORMAL
    assert [e["code"] for e in socket.sent if e["type"] == "error"] == ["bad_frame_time"]
    assert entry.state.n_frames == 40 and entry.state.frames_s == entry.state.audio_s


@pytest.mark.parametrize(
    ("mode", "header", "size"),
    [
        ("landmarks", {"t": 0.5}, 16 * 2**20),
        ("landmarks", {}, protocol.FRAME_FLOATS * 4 - 1),
        ("video", {"format": "jpeg"}, 30_000_001),
    ],
    ids=["landmarks-16MiB", "landmarks-short", "video-over-raw-rgb"],
)
def test_a_frame_larger_than_its_mode_allows_is_refused_on_receipt_unqueued(mode, header, size):
    """Before, every frame up to the proxy's 16 MiB message limit was queued (and counted as 0.1 s by the
    flood check): about 100 of them per stream before it was closed. Now its payload is never queued; the
    frame keeps its slot without a face."""
    the_hub = hub()
    start = {"mode": mode, "image_size": list(SIZE)} if mode == "landmarks" else {"mode": mode}
    session = Session(None, the_hub, open_stream(the_hub, **start), resumed=False)
    chunk = frame({"seq": 0, "width": 4000, "height": 2500, **header}, bytes(size))["bytes"]
    with pytest.raises(StreamRejected, match="bytes") as exc:
        session._chunk(chunk)
    assert exc.value.code == "bad_frame"
    (item,) = session.inbound.items
    assert item.kind == "dropped" and item.payload is None and session.inbound.bytes == 0
    kept = {"kind": "frame", "seq": 0, **({"t": header["t"]} if "t" in header else {})}  # its slot
    assert item.header == kept and session.state.next_seq["frame"] == 1


def test_frames_within_their_modes_size_are_queued():
    the_hub = hub()
    session = Session(None, the_hub, open_stream(the_hub, mode="video"), resumed=False)
    session._chunk(
        frame({"seq": 0, "format": "rgb", "width": 1920, "height": 1080}, bytes(1920 * 1080 * 3))["bytes"]
    )
    assert [i.kind for i in session.inbound.items] == ["frame"]
