"""Monitoring streams without a server: a stream cuts the clip's windows; alert logic, protocol, limits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support.stream_events import kinds
from support.stream_feed import STEP, feed, start

from avpenet import contract
from avpenet.features import audio, windows
from avpenet.features.track import FaceTrack
from preprocess_service.stream import protocol
from preprocess_service.stream.alerts import AlertMonitor, Window
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import StreamConfig, StreamRejected, encode_chunk
from preprocess_service.stream.registry import StreamRegistry
from preprocess_service.stream.state import StreamState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_stream_windows_equal_clip_windows():
    """The example recording (audio + landmarks) streamed gives the clip's model inputs, window by window."""
    wave = audio.load_audio((EXAMPLES / "adult-S0003-C02.wav").read_bytes())
    track = FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())
    clip = windows.model_inputs(wave, track, "adult")
    state = StreamState(start(image_size=tuple(int(v) for v in track.image_size)), max_pixels=10**7)
    got = feed(state, wave, track)
    assert [w.index for w in got] == list(range(len(clip[contract.WAVEFORM.name])))
    as_windows = [windows.model_inputs_of(w.inputs) for w in got]  # each window's own sound and gain
    for name, expected in clip.items():
        np.testing.assert_allclose(
            np.concatenate([w[name] for w in as_windows]), expected, atol=1e-6, err_msg=name
        )


def test_audio_only_and_landmarks_only_streams_match_clips():
    wave = audio.load_audio((EXAMPLES / "adult-moan-audio-only.wav").read_bytes())
    got = feed(StreamState(start(mode="audio"), 10**7), wave, None)
    clip = windows.model_inputs(wave, None, "adult")
    sent = [windows.model_inputs_of(w.inputs)[contract.WAVEFORM.name] for w in got]
    np.testing.assert_allclose(np.concatenate(sent), clip[contract.WAVEFORM.name], atol=1e-6)
    track = FaceTrack.load_npz((EXAMPLES / "adult-landmarks-only.npz").read_bytes())
    size = tuple(int(v) for v in track.image_size)
    got = feed(StreamState(start(audio=False, image_size=size), 10**7), None, track)
    clip = windows.model_inputs(None, track, "adult")
    for name in ("visual_features", "frame_mask", "audio_present"):
        np.testing.assert_allclose(np.concatenate([w.inputs[name] for w in got]), clip[name], atol=1e-6)


@pytest.mark.parametrize("rate", [48000, 44100, 8000])
def test_a_stream_at_another_rate_gives_the_clips_windows(rate):
    """A device at 48 kHz used to break on its first chunk (the resampler got float64 for float32), and again
    on every resume: no score at all. Now its windows are the upload path's, resampled the same way."""
    t = np.arange(int(4.3 * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32)
    state, step, got = StreamState(start(mode="audio", sample_rate=rate), 10**7), rate // contract.FPS, []
    for k in range(-(-wave.size // step)):
        state.check_seq("audio", k)
        state.add_audio({"rate": rate}, memoryview(wave[k * step : (k + 1) * step].astype("<f4").tobytes()))
        got += state.ready()
    got += state.finish()
    sent = [windows.model_inputs_of(w.inputs)[contract.WAVEFORM.name] for w in got]
    clip = windows.model_inputs(audio.resample(wave, rate), None, "adult")[contract.WAVEFORM.name]
    np.testing.assert_allclose(np.concatenate(sent), clip, atol=1e-6)


def test_buffers_stay_bounded_on_a_long_stream():
    state = StreamState(start(mode="audio"), 10**7)
    for k in range(600):  # 60 s
        state.check_seq("audio", k)
        state.add_audio({}, memoryview(np.zeros(STEP, "<f4").tobytes()))
        state.ready()
    assert state.audio_buf.size <= contract.WINDOW_SAMPLES + STEP
    assert state.next_window == 58


def test_sequence_rate_and_size_checks():
    state = StreamState(start(mode="video", sample_rate=16000), 10**7)
    state.check_seq("audio", 0)
    with pytest.raises(StreamRejected, match="already received") as dup:
        state.check_seq("audio", 0)
    assert dup.value.code == "duplicate"
    with pytest.raises(StreamRejected, match="resend from 1") as gap:
        state.check_seq("audio", 5)
    assert gap.value.code == "out_of_order"
    with pytest.raises(StreamRejected) as rate:
        state.add_audio({"rate": 48000}, memoryview(np.zeros(10, "<f4").tobytes()))
    assert rate.value.code == "rate_changed"
    with pytest.raises(StreamRejected) as nan:
        state.add_audio({}, memoryview(np.full(10, np.nan, "<f4").tobytes()))
    assert nan.value.code == "bad_audio"
    black = {"format": "rgb", "width": 64, "height": 48}
    state.add_frame(black, memoryview(np.zeros((48, 64, 3), np.uint8).tobytes()))
    with pytest.raises(StreamRejected) as size:
        state.add_frame(
            {"format": "rgb", "width": 32, "height": 48},
            memoryview(np.zeros((48, 32, 3), np.uint8).tobytes()),
        )
    assert size.value.code == "frame_size_changed"
    with pytest.raises(StreamRejected) as junk:
        state.add_frame({"format": "png", "width": 64, "height": 48}, memoryview(b"not a png"))
    assert junk.value.code == "bad_frame"
    state.close()


def test_an_image_is_sized_from_its_own_header_before_it_is_decoded():
    import cv2

    from preprocess_service.stream.frames import decode_image

    header = {"format": "png", "width": 64, "height": 48}
    _, small = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))
    assert decode_image(header, memoryview(small.tobytes()), 64 * 48).shape == (48, 64, 3)
    # 4 Mpx in ~15 kB, under a header claiming 64x48: refused from the PNG's IHDR, never decoded
    _, bomb = cv2.imencode(".png", np.zeros((2000, 2000, 3), np.uint8))
    with pytest.raises(StreamRejected, match="the png image is 2000x2000") as big:
        decode_image(header, memoryview(bomb.tobytes()), 64 * 48)
    assert big.value.code == "bad_frame"
    for payload in (b"", small.tobytes()[:40]):  # no bytes at all (cv2.imdecode raises), a cut-off PNG
        with pytest.raises(StreamRejected) as bad:
            decode_image({**header, "format": "jpeg"}, memoryview(payload), 64 * 48)
        assert bad.value.code == "bad_frame"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", encode_chunk({"kind": "x", "seq": 0}, b""),
     encode_chunk({"kind": "audio", "seq": -1}, b""), encode_chunk({"kind": "audio", "seq": True}, b""),
     b"\x00\x00\x03\xfc" + b"[" * 1020],  # nested deeper than the JSON parser's stack (RecursionError)
)  # fmt: skip
def test_garbage_chunks_are_refused(data):
    with pytest.raises(StreamRejected) as exc:
        protocol.parse_chunk(data)
    assert exc.value.code == "garbage"


def test_a_chunk_cut_short_says_so():
    """Before: 'chunk header length 40 is not within 2..1024' for a message shorter than its header."""
    whole = encode_chunk({"kind": "audio", "seq": 0, "rate": 16000}, b"")
    with pytest.raises(StreamRejected, match=f"{len(whole) - 5} bytes is cut short") as exc:
        protocol.parse_chunk(whole[:-5])
    assert f"{len(whole) - 4}-byte JSON header" in exc.value.detail and "not within" not in exc.value.detail


def test_deeply_nested_control_message_is_garbage():
    with pytest.raises(StreamRejected) as exc:
        protocol.parse_control("[" * 5000)
    assert exc.value.code == "garbage"


def test_bad_start_names_the_field():
    with pytest.raises(StreamRejected, match="age_group"):
        protocol.parse_start('{"type": "start", "mode": "audio", "age_group": "toddler"}')
    with pytest.raises(StreamRejected, match="config.threshold"):
        protocol.parse_start('{"type": "start", "mode": "audio", "config": {"threshold": 99}}')
    with pytest.raises(StreamRejected):
        protocol.parse_start("garbage")
    for size in ("[18446744073709551616, 1]", "[-1, 480]", "[640, 16385]"):  # an .npz track's bounds
        with pytest.raises(StreamRejected, match="image_size"):
            protocol.parse_start(f'{{"type": "start", "mode": "landmarks", "image_size": {size}}}')
    start = protocol.parse_start('{"type": "start", "mode": "landmarks", "image_size": [640, 480]}')
    assert start.image_size == (640, 480)


def test_a_landmarks_stream_must_say_its_frame_size():
    """Without it every face would be aligned squeezed into a square (scores off by up to 3 points)."""
    for size in ("", ', "image_size": [0, 0]', ', "image_size": [640, 0]'):
        with pytest.raises(StreamRejected, match=r"image_size \[width, height\]") as err:
            protocol.parse_start(f'{{"type": "start", "mode": "landmarks"{size}}}')
        assert err.value.code == "bad_start"
    # video frames carry their own size, and an audio stream has none
    assert protocol.parse_start('{"type": "start", "mode": "video"}').image_size == (0, 0)
    assert protocol.parse_start('{"type": "start", "mode": "audio"}').mode == "audio"


# --- alerts -------------------------------------------------------------------------------------------------
def run(scores, config: StreamConfig, handling=()) -> list[dict]:
    """Window i completes (and is fed) at media time i + 3 s; handling declared by then applies first."""
    mon = AlertMonitor(config)
    events, todo = [], list(handling)
    for i, s in enumerate(scores):
        while todo and todo[0][0] <= i + contract.WINDOW_SECONDS:
            at_s, active = todo.pop(0)
            mon.handling.set(active, float(at_s))
        w = Window(i, float(i), i + 3.0, s, max(s - 1, 0), min(s + 1, 10), contract.level_of(s), 0.5, 0.5)
        events += mon.feed(w)
    return events


def test_sustained_pain_alerts_once_and_clears():
    cfg = StreamConfig(threshold=6, windows=5, clear_windows=3)
    events = run([2] * 5 + [8] * 10 + [1] * 5, cfg)
    assert [e["window"] for e in kinds(events, "alert")] == [9]  # the 5th window above 6
    assert kinds(events, "alert")[0]["since_s"] == 5.0
    assert [e["window"] for e in kinds(events, "alert_cleared")] == [17]
    assert len(kinds(events, "score")) == 20 and len(kinds(events, "trend")) == 4


def test_calm_or_intermittent_pain_does_not_alert():
    cfg = StreamConfig(threshold=6, windows=5)
    assert not kinds(run([1] * 30, cfg), "alert")
    assert not kinds(run([8, 8, 8, 8, 2] * 6, cfg), "alert")


def test_nips_scale_threshold():
    cfg = StreamConfig(scale="nips", threshold=3, windows=3)  # NIPS-equivalent > 3 = model score > 4.29
    assert kinds(run([4.5] * 3, cfg), "alert")
    assert not kinds(run([4.2] * 10, cfg), "alert")


def test_handling_suppresses_and_restarts_the_run():
    cfg = StreamConfig(threshold=6, windows=5, handling_grace_s=3)
    events = run([8] * 12, cfg, handling=[(2, True), (6, False)])
    scores = kinds(events, "score")
    # windows [i, i+3) overlapping handling [2, 6) + 3 s grace are suppressed: 0..8
    assert [s["suppressed"] for s in scores] == [True] * 9 + [False] * 3
    assert not kinds(events, "alert")
    events = run([8] * 20, cfg, handling=[(2, True), (6, False)])
    assert [e["window"] for e in kinds(events, "alert")] == [13]  # 5 unsuppressed windows after the grace


def test_baseline_raises_the_threshold():
    cfg = StreamConfig(threshold=3, windows=2, baseline_s=10, baseline_margin=2)
    events = run([5] * 8 + [6] * 5 + [8] * 3, cfg)  # baseline median 5: alert needs > 7
    assert all(s["baseline"] for s in kinds(events, "score")[:8])
    assert [e["window"] for e in kinds(events, "alert")] == [14]


def test_handling_during_the_baseline_is_not_the_patients_baseline():
    cfg = StreamConfig(threshold=6, windows=5, baseline_s=30, handling_grace_s=0)
    # handling over the first 20 s scores 8 (a nappy change), then the patient is calm, then in pain
    events = run([8] * 17 + [2] * 20 + [7.5] * 40, cfg, handling=[(0, True), (20, False)])
    assert kinds(events, "alert")  # the baseline is the calm 2, not the handling's 8: 7.5 > 6 alerts


def test_windows_without_any_signal_neither_alert_nor_set_the_baseline():
    """Neither modality: the score is the model's age prior (5.7, NIPS 4.0), not the patient's."""
    cfg = StreamConfig(scale="nips", threshold=3, windows=3, baseline_s=6)
    mon, events = AlertMonitor(cfg), []
    for i, (s, weights) in enumerate(
        [(1.0, (0.5, 0.5))] * 4 + [(5.7, (0.0, 0.0))] * 6 + [(1.0, (1.0, 0))] * 2
    ):
        w = Window(i, float(i), i + 3.0, s, s - 1, s + 1, contract.level_of(s), *weights)
        events += mon.feed(w)
    assert not kinds(events, "alert") and mon.baseline == 1.0
    assert [e["no_signal"] for e in kinds(events, "score")] == [False] * 4 + [True] * 6 + [False] * 2
    assert not [e for e in kinds(events, "trend") if e["trend"] > 1.0]


def test_a_camera_stall_past_the_timeout_is_realigned_when_frames_return():
    """Frames stop for 2.5 s (timeout 2.1 s): the windows cut meanwhile still hold frames from before the
    stall, and when frames return they are placed after a faceless gap, level with the audio again."""
    track = FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())
    size = tuple(int(v) for v in track.image_size)
    state = StreamState(start(image_size=size, config={"signal_timeout_s": 2.1}), max_pixels=10**7)
    sent = 0
    for tick in range(1, 151):  # 100 ms ticks; no frames from 5.0 to 7.5 s
        state.add_audio({}, memoryview(np.full(STEP, 0.01, "<f4").tobytes()))
        if not 50 < tick <= 75:
            k = sent % track.n_frames
            state.add_frame({}, memoryview(protocol.landmark_frame_bytes(track, k)))
            sent += 1
        for w in state.ready():
            state.signal_events(w)
    assert abs(state.audio_s - state.frames_s) <= 0.15  # was 2.5 s behind for the rest of the stream
    state.close()


def test_stream_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="greater than 2"):  # a 2-s audio chunk would lag past it
        StreamConfig(signal_timeout_s=2.0)
    with pytest.raises(ValueError, match="never be exceeded on the nips scale"):
        StreamConfig(scale="nips", threshold=8)


# --- registry -----------------------------------------------------------------------------------------------
def test_registry_limits_and_resume():
    reg = StreamRegistry(StreamLimits(max_streams=3, max_streams_per_key=2, resume_ttl_s=60), 10**7)
    s = start(mode="audio")
    a, resumed = reg.acquire(s, "stream-a1", "key-1")
    assert not resumed
    reg.acquire(s, "stream-a2", "key-1")
    with pytest.raises(StreamRejected, match="2 open streams"):
        reg.acquire(s, "stream-a3", "key-1")
    with pytest.raises(StreamRejected, match="another connection; retry") as busy:
        reg.acquire(s, "stream-a1", "key-1")
    assert busy.value.code == "stream_id_busy"  # closed 4429 (retry), not 4400 (a bad start message)
    reg.detach(a)
    theirs, resumed = reg.acquire(s, "stream-a1", "key-2")  # another key's id: another stream (two wards)
    assert not resumed and theirs is not a
    again, resumed = reg.acquire(s, "stream-a1", "key-1")
    assert resumed and again is a
    reg.detach(a)
    reg.sweep(now=a.detached_at + 61)
    assert ("stream-a1", "key-1") not in reg.streams and ("stream-a1", "key-2") in reg.streams
    # opened without a stream_id (the server made one up), resumed with the id `started` gave it
    b, _ = reg.acquire(s, "stream-b1", "key-1")
    reg.detach(b)
    again, resumed = reg.acquire(s.model_copy(update={"stream_id": "stream-b1"}), "stream-b1", "key-1")
    assert resumed and again is b


def test_a_new_stream_takes_the_place_of_a_detached_one_at_a_limit():
    """A central station restarted opens its ward's streams under new ids while the old ones are still held
    for a resume. Before, each new stream was refused 4429 until the old ones expired (`resume_ttl_s`)."""
    ticks = iter(range(100))
    reg = StreamRegistry(
        StreamLimits(max_streams=3, max_streams_per_key=2, resume_ttl_s=60), 10**7, clock=lambda: next(ticks)
    )
    s = start(mode="audio")
    old_1, _ = reg.acquire(s, "bed-1", "key-1")
    old_2, _ = reg.acquire(s, "bed-2", "key-1")
    reg.detach(old_1)
    reg.detach(old_2)
    closed: list[str] = []
    old_1.state.close = lambda: closed.append("bed-1")
    _, resumed = reg.acquire(s, "bed-1-new", "key-1")
    assert not resumed and closed == ["bed-1"]  # the longest detached gave way, its tracker closed
    assert set(reg.streams) == {("bed-2", "key-1"), ("bed-1-new", "key-1")}
    reg.acquire(s, "bed-2-new", "key-1")
    with pytest.raises(StreamRejected, match="2 open streams"):  # all of the key's streams attached
        reg.acquire(s, "bed-3", "key-1")
    theirs, _ = reg.acquire(s, "bed-9", "key-2")  # the replica's 3
    reg.detach(theirs)
    reg.acquire(s, "bed-8", "key-3")  # another key's detached stream gives way at the replica's limit
    assert ("bed-9", "key-2") not in reg.streams and reg.count() == 3
    with pytest.raises(StreamRejected, match="holds 3 streams"):  # every stream attached
        reg.acquire(s, "bed-7", "key-2")


def test_a_resume_past_the_replay_buffer_says_what_it_missed_and_whether_an_alert_is_on():
    from types import SimpleNamespace

    from preprocess_service.stream.session import Session

    reg = StreamRegistry(StreamLimits(replay_events=4), 10**7)
    entry, _ = reg.acquire(start(mode="audio"), "stream-r1", "key-1")
    for seq in range(10):  # events 0-9 were sent; only the last 4 are kept
        entry.events.append({"type": "score", "seq": seq})
    entry.event_seq = 10
    entry.monitor.alerting = True  # raised by an event no longer kept
    hub = SimpleNamespace(registry=reg)

    async def resume(last_event: int) -> list[dict]:
        session = Session(None, hub, entry, resumed=True, last_event=last_event)
        sent: list[dict] = []
        session.emit = lambda event, record=True: sent.append(event)
        session._started()
        return sent

    sent = asyncio.run(resume(last_event=2))
    assert sent[0]["type"] == "started" and sent[0]["alerting"] is True
    assert sent[1]["code"] == "events_missed" and sent[1]["count"] == 3  # seqs 3, 4 and 5
    assert [e["seq"] for e in sent[2:]] == [6, 7, 8, 9]
    assert not [e for e in asyncio.run(resume(last_event=5)) if e.get("code") == "events_missed"]
    reg.drop(("stream-r1", "key-1"))


def test_inbound_queue_drops_oldest_frames_never_audio():
    from preprocess_service.stream.inbound import Inbound, Item

    q = Inbound(StreamLimits(max_pending_bytes=1000, max_pending_items=10))
    q.put(Item("audio", {}, b"a" * 400, 0.0))
    for _ in range(3):
        q.put(Item("frame", {}, b"f" * 300, 0.0))
    assert [i.kind for i in q.items] == ["audio", "dropped", "frame", "frame"] and q.dropped == 1
    assert q.bytes == 1000 and not q.full()
    q.put(Item("audio", {}, b"a" * 700, 0.0))  # only audio left to drop: over the bound, the receiver waits
    assert q.full() and [i.kind for i in q.items].count("frame") == 0
    # at real time: its first chunk came now, however long ago it opened (an idle start is no lag)
    live = SimpleNamespace(first_chunk_at=time.monotonic(), state=SimpleNamespace(media_s=0.0))
    live.behind_max_s = 10.0
    assert "was processed for" in asyncio.run(q.room(0.01, live))  # it took nothing: stuck (4409)
    behind = SimpleNamespace(first_chunk_at=time.monotonic() - 100, state=SimpleNamespace(media_s=20.0))
    behind.behind_max_s = 60.0
    assert "cannot keep up" in asyncio.run(q.room(10.0, behind))  # 80 s behind: no pause (4409)
    assert [i.kind for i in q.take(2)] == ["audio", "dropped"] and q.bytes == 700
    assert not q.full() and asyncio.run(q.room(0.01, behind)) is None


def test_a_streams_lag_counts_from_its_first_chunk_and_its_bound_comes_down_as_it_catches_up():
    """A device idle 30 s after opening is not 30 s behind at its first chunk (before, that idle time was
    lag for the stream's life); a bound an outage raised returns to `max_ahead_s` once its backlog is done."""
    from preprocess_service.stream import pause

    now = time.monotonic()
    entry = SimpleNamespace(opened_at=now - 30, first_chunk_at=None, read_at=now - 30, behind_max_s=0.0)
    entry.state = SimpleNamespace(media_s=0.0)
    pause.behind_bound(entry, False, 10.0)
    pause.chunk_read(entry)
    assert entry.behind_max_s == 10.0 and pause.processed_behind_s(entry) < 1.0
    entry.first_chunk_at, entry.read_at = now - 100, now - 60  # then a 60-s outage, resumed now
    entry.state.media_s = 40.0
    pause.behind_bound(entry, True, 10.0)
    assert 69.0 < entry.behind_max_s < 71.0  # the outage's backlog may wait
    entry.state.media_s = 100.0  # processed: caught up
    pause.tighten(entry, 10.0)
    assert 10.0 <= entry.behind_max_s < 11.0


def test_a_chunk_whose_send_failed_is_kept_for_the_resend_under_its_own_number():
    """The client's numbering after a send that raised: the chunk is kept (reconnect resends it) and the
    next chunk of that kind takes the next number, for frames as for audio."""
    from preprocess_service.stream.client import Stream

    class Link:  # delivers the first chunk of each kind, then the connection is gone
        def __init__(self) -> None:
            self.delivered: list[bytes] = []

        async def send(self, chunk: bytes) -> None:
            if len(self.delivered) >= 2:
                raise ConnectionError("link down")
            self.delivered.append(chunk)

    stream = Stream(
        Link(), {"type": "started", "stream_id": "bed-3-units", "next_seq": {"audio": 0, "frame": 0}}
    )
    image = np.zeros((2, 2, 3), np.uint8)

    async def scenario() -> None:
        await stream.send_audio(np.zeros(STEP, np.float32))
        await stream.send_image(image, fmt="rgb")
        for send in (stream.send_audio(np.zeros(STEP, np.float32)), stream.send_image(image, fmt="rgb")):
            with pytest.raises(ConnectionError):
                await send

    asyncio.run(scenario())
    assert stream.seq == {"audio": 2, "frame": 2}
    assert [(kind, seq) for kind, seq, _ in stream.sent] == [
        ("audio", 0),
        ("frame", 0),
        ("audio", 1),
        ("frame", 1),
    ]
