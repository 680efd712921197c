"""A refused audio chunk keeps its time on the timeline as silence, but that silence is no sound: a window
mostly made of it (more than half of its samples; samples.Unheard) is a window without audio, as a window of
frames without a face is one without a face.

Before, the zeros counted as present audio: with NaN audio chunks and no usable face, every window was scored
from digital zeros as a calm, silent patient (audio_present 1, audio_ok true, no signal_lost audio, and not
`no_signal` for the alert logic)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from support.stream_feed import start

from avpenet import contract
from avpenet.features import windows
from avpenet.features.track import FaceTrack
from avpenet.model import load_model
from avpenet.predict import predict_windows
from preprocess_service.stream import protocol
from preprocess_service.stream.alerts import AlertMonitor, Window
from preprocess_service.stream.protocol import StreamConfig, StreamRejected
from preprocess_service.stream.state import StreamState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRACK = FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())
SIZE = tuple(int(v) for v in TRACK.image_size)
TICK = contract.SAMPLES_PER_FRAME


def _stream(track: FaceTrack, refused, ticks: int = 60) -> tuple[StreamState, list]:
    """`ticks` ticks of 0.1 s: audio (NaN in the ticks `refused` names, a quiet room else) and frames."""
    state, out = StreamState(start(image_size=SIZE), 10**7), []
    rng = np.random.default_rng(0)
    for k in range(ticks):
        wave = (rng.standard_normal(TICK) * 0.01).astype("<f4")
        wave[0] = np.nan if refused(k) else wave[0]
        state.check_seq("audio", k)
        try:
            state.add_audio({"rate": contract.SAMPLE_RATE}, memoryview(wave.tobytes()))
        except StreamRejected as exc:
            assert exc.code == "bad_audio" and refused(k)
        state.check_seq("frame", k)
        state.add_frame({}, memoryview(protocol.landmark_frame_bytes(track, k % track.n_frames)))
        out += state.ready()
    return state, out + state.finish()


def test_nan_audio_beside_no_face_is_no_signal_as_before_the_padding():
    state, cut = _stream(FaceTrack.empty(60, SIZE), lambda k: True)
    assert state.audio_s == state.frames_s == 6.0  # the timeline holds
    assert len(cut) == 4
    for w in cut:
        assert w.inputs[contract.AUDIO_PRESENT.name].ravel().tolist() == [0.0]  # before: 1.0
        assert not w.audio_ok and not w.visual_ok
    events = state.signal_events(cut[0])
    assert {(e["type"], e["modality"]) for e in events} == {
        ("signal_lost", "audio"),
        ("signal_lost", "visual"),
    }
    out = predict_windows(load_model().model, windows.model_inputs_of(cut[0].inputs))
    weights = out[contract.MODALITY_WEIGHTS.name][0]
    assert weights.tolist() == [0.0, 0.0]  # both absent: the alert logic's no_signal
    score = float(out[contract.SCORE.name][0, 0])
    mon = AlertMonitor(StreamConfig(baseline_s=0))
    (event,) = mon.feed(Window(0, 0.0, 3.0, score, score, score, "x", *map(float, weights)))
    assert event["no_signal"]


def test_nan_audio_beside_a_face_is_scored_from_the_face_alone():
    state, cut = _stream(TRACK, lambda k: True)
    for w in cut:
        assert w.inputs[contract.AUDIO_PRESENT.name].ravel().tolist() == [0.0]
        assert not w.audio_ok and w.visual_ok
    assert [e["modality"] for e in state.signal_events(cut[0])] == ["audio"]
    # the same frames streamed without any audio at all: the same inputs (the sound masked)
    alone, out = StreamState(start(image_size=SIZE, audio=False), 10**7), []
    for k in range(60):
        alone.check_seq("frame", k)
        alone.add_frame({}, memoryview(protocol.landmark_frame_bytes(TRACK, k % TRACK.n_frames)))
        out += alone.ready()
    out += alone.finish()
    for mine, face_only in zip(cut, out, strict=True):
        assert mine.inputs.keys() == face_only.inputs.keys()
        for name, value in mine.inputs.items():
            np.testing.assert_array_equal(value, face_only.inputs[name], err_msg=name)


def test_a_window_is_audio_while_at_most_half_of_it_was_refused():
    """0.5-2.5 s refused: window 0 (0-3 s, 2 s of it refused) is not audio; window 1 (1-4 s, 1.5 s: half)
    is audio again (signal_back), and so are the windows after it."""
    state, cut = _stream(TRACK, lambda k: 5 <= k < 25)
    assert [w.audio_ok for w in cut] == [False, True, True, True]
    assert [w.inputs[contract.AUDIO_PRESENT.name].item() for w in cut] == [0.0, 1.0, 1.0, 1.0]
    kinds = [[(e["type"], e["modality"]) for e in state.signal_events(w)] for w in cut]
    assert kinds == [[("signal_lost", "audio")], [("signal_back", "audio")], [], []]
    assert state.unheard.spans == []  # forgotten once no window reads them


def test_a_resampled_streams_refused_span_is_where_its_chunks_were():
    """soxr holds back 0.03-0.1 s of output, so a refused chunk's span was marked where the delayed output of
    its call landed: real sound before it counted as unheard and a window exactly half refused lost its
    audio at 44.1 and 8 kHz, not at 16 kHz. Refused chunks cover 2.5-4.1 s: only window [2, 5) is mostly
    refused, at every rate (the sixth window waits on soxr's delay at 44.1 and 8 kHz)."""
    for rate in (16000, 44100, 8000):
        state, ready = StreamState(start(mode="audio", sample_rate=rate), 10**7), []
        rng = np.random.default_rng(0)
        for k in range(80):  # 0.1-s chunks
            wave = (rng.standard_normal(rate // 10) * 0.3).astype("<f4")
            if 25 <= k < 41:
                wave[0] = np.nan
            state.check_seq("audio", k)
            with contextlib.suppress(StreamRejected):  # the refused chunk: its time kept as unheard
                state.add_audio({"rate": rate}, memoryview(wave.tobytes()))
            ready += state.ready()
        assert [int(w.audio_ok) for w in ready[:5]] == [1, 1, 0, 1, 1], rate  # before: 1, 0, 0 at 44.1 and 8


def test_the_silence_a_returning_microphone_is_realigned_over_is_unheard():
    """The microphone drops out from 4 s to 9 s while the camera goes on: past signal_timeout_s the audio is
    lost, and when it returns the gap is filled with silence to realign it. That silence was scored as
    heard sound: window [7, 10), two thirds of it the gap, came out audio_ok with a calm, silent patient in
    it, and a pain run broke on it. Now the gap is unheard (samples.Unheard), as refused chunks are: [7, 10)
    has no audio, [8, 11) (a third of it the gap) has."""
    state, cut = StreamState(start(image_size=SIZE), 10**7), []
    rng = np.random.default_rng(0)
    audio_seq = 0
    for k in range(160):
        if not 40 <= k < 90:
            state.check_seq("audio", audio_seq)
            wave = (rng.standard_normal(TICK) * 0.2).astype("<f4")
            state.add_audio({"rate": contract.SAMPLE_RATE}, memoryview(wave.tobytes()))
            audio_seq += 1
        state.check_seq("frame", k)
        state.add_frame({}, memoryview(protocol.landmark_frame_bytes(TRACK, k % TRACK.n_frames)))
        cut += state.ready()
    audio = {w.index: w.audio_ok for w in cut}
    assert [audio[i] for i in range(4, 10)] == [False, False, False, False, True, True], audio  # [7] was True
    assert all(w.visual_ok for w in cut)
    events = [(e["type"], e["modality"], w.index) for w in cut for e in state.signal_events(w)]
    assert events == [("signal_lost", "audio", 4), ("signal_back", "audio", 8)]  # before: back at 7
