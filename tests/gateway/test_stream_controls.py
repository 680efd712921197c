"""A stream's text control messages are bounded: in number, in what they leave in the alert state, and they do
not keep a stream open.

Before, a client toggling `handling` on and off grew the stream's handling periods without limit (each
on/off pair added one until a window was scored), every checkpoint copied all of them on the event loop
(200,000 periods: 0.23 s each), and since any text message fed the stall timer a stream that sent only
toggles held its slot and its replica's request slot for ever.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.stream_session import Socket, audio, frame, hub, open_stream, run, text

from preprocess_service.stream.alerts import AlertMonitor, Handling
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import (
    CLOSE_GARBAGE,
    CLOSE_SLOW_CONSUMER,
    CLOSE_STALLED,
    FRAME_FLOATS,
    Start,
    StreamConfig,
)
from preprocess_service.stream.receiving import CONTROL_BURST

ON, OFF = text({"type": "handling", "active": True}), text({"type": "handling", "active": False})


def test_toggling_handling_between_windows_keeps_one_period_and_a_small_checkpoint():
    mon = AlertMonitor(StreamConfig())
    for i in range(100_000):
        mon.handling.set(i % 2 == 0, 5.0)
    assert mon.handling.periods == [(5.0, 5.0)]  # the last toggle closed it
    assert len(mon.snapshot(5.0)["handling"]) == 1


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    steps=st.lists(st.tuples(st.booleans(), st.floats(0, 4)), max_size=12),
    grace=st.sampled_from([0.0, 0.5, 3.0]),
)
def test_coalesced_periods_suppress_exactly_the_windows_the_declared_ones_did(steps, grace):
    """Reopening a period within the grace of its end goes on with it: no window of any start and length is
    suppressed differently from the periods as declared."""
    merged, declared, at, open_ = Handling(grace_s=grace), [], 0.0, False
    for active, dt in steps:
        at += dt
        merged.set(active, at)
        if active and not open_:
            declared.append([at, None])
        elif not active and open_:
            declared[-1][1] = at
        open_ = active
    plain = Handling(periods=[tuple(p) for p in declared])
    for start in [x / 4 for x in range(0, 4 * int(at + 6))]:
        for length in (0.25, 1.0, 3.0):
            assert merged.covers(start, start + length, grace) == plain.covers(start, start + length, grace)


def test_a_flood_of_control_messages_is_closed_4409_with_its_reason():
    the_hub = hub()
    entry = open_stream(the_hub)
    socket = Socket([ON, OFF] * 5000)
    assert run(the_hub, entry, socket) == CLOSE_SLOW_CONSUMER
    (error,) = socket.errors("control_flood")
    assert error["fatal"] and "handling only when it changes" in error["detail"]
    assert len(socket.messages) > 9000  # closed at its budget, not after reading the flood
    assert len(entry.monitor.handling.periods) <= 1 and not entry.finished  # its state kept for a resume


def test_handling_marks_along_the_media_are_within_the_budget():
    """A resend of 10 s of media (sent at once), a mark every 3 chunks: 34 marks, within 20 + 2 a second."""
    the_hub = hub()
    entry = open_stream(the_hub)
    messages = []
    for k in range(100):
        messages += [audio(k)] + ([ON if k % 6 == 0 else OFF] if k % 3 == 0 else [])
    socket = Socket([*messages, text({"type": "end"})])
    assert len(messages) - 100 > CONTROL_BURST
    assert run(the_hub, entry, socket) == 1000
    assert not socket.errors("control_flood")


def test_a_stream_sending_only_text_is_closed_as_stalled():
    """Toggles every 50 ms kept a stream without media open for ever; now it is closed after the stall
    timeout (0.5 s here) since its last chunk, with the limit on control messages not reached."""
    the_hub = hub(StreamLimits(stall_timeout_s=0.5))
    entry = open_stream(the_hub)
    socket = Socket([audio(0)] + [ON, OFF] * 200, pace_s=0.05)
    assert run(the_hub, entry, socket) == CLOSE_STALLED
    # Closed while the client was still toggling (most of its 20 s of toggles unsent), not by the stall after
    # its last message: counted in messages, not in wall time, so a slow or loaded machine reads the same.
    assert len(socket.messages) > 200
    assert socket.errors("stalled") and "no audio or frame chunk" in socket.errors("stalled")[0]["detail"]


def test_unreadable_messages_close_4415_and_keep_the_stream_for_a_resume():
    """A device sending unknown keep-alive text while its media paused: before, the close 4415 marked the
    stream finished, so its state and checkpoint were dropped and an alert that was on was forgotten."""
    the_hub = hub()
    entry = open_stream(the_hub, "stream-garbage1")
    entry.monitor.alerting = True
    socket = Socket([audio(0)] + [text({"type": "keepalive"})] * 25)
    assert run(the_hub, entry, socket) == CLOSE_GARBAGE
    assert not entry.finished  # before: finished, its state dropped at the detach
    assert "resumed" in socket.errors("garbage")[-1]["detail"]
    the_hub.registry.detach(entry)
    start = Start(type="start", mode="audio", age_group="adult", stream_id="stream-garbage1", last_event=0)
    again, resumed = the_hub.registry.acquire(start, "stream-garbage1", "key-1")
    assert resumed and again is entry and again.monitor.alerting and again.state.next_seq["audio"] == 1


def test_frames_ahead_by_their_capture_time_are_told_t_restarts_after_a_new_stream():
    """A device resumed onto a new stream (started.resumed false) that keeps its clock sends t = 500 s: the
    close 4409 too_fast said only 'stream at real time'; it now names `t` and its restart from 0."""
    the_hub = hub()
    entry = open_stream(the_hub, mode="landmarks", image_size=[640, 480], audio=False)
    socket = Socket([frame({"seq": 0, "t": 500.0}, bytes(FRAME_FLOATS * 4))])
    assert run(the_hub, entry, socket) == CLOSE_SLOW_CONSUMER
    (error,) = socket.errors("too_fast")
    assert "'t'" in error["detail"] and "from 0 again" in error["detail"] and "resumed" in error["detail"]


def test_an_end_after_the_control_budget_is_spent_ends_the_stream():
    """`end` is the last message: sent after the budget was spent, it closed the stream 4409 `control_flood`
    (and left it unfinished) instead of ending it."""
    the_hub = hub()
    entry = open_stream(the_hub)
    socket = Socket([audio(0)] + [ON, OFF] * (CONTROL_BURST // 2) + [text({"type": "end"})])
    assert run(the_hub, entry, socket) == 1000
    assert not socket.errors("control_flood") and entry.finished
    assert [e["type"] for e in socket.sent][-1] == "end"
    flood = Socket([audio(0)] + [ON, OFF] * (CONTROL_BURST // 2) + [ON, text({"type": "end"})])
    assert run(the_hub, open_stream(the_hub, "stream-unit-2"), flood) == CLOSE_SLOW_CONSUMER  # one more still
