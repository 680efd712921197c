"""A window the model could not score (`unavailable`: Triton down, or a call refused while overloaded) is
unknown to the alert logic: by itself it neither extends nor breaks a run, and unscored windows in a row
adding up to 3 s of hops (alerts.OUTAGE_GAP_S: 3 windows) are a gap that restarts both runs.

Before 5d1cd91 such windows were never fed to it, so the windows on both sides of an outage counted as one
run: 3 s of pain, a 10-minute outage, 2 s of pain raised a `sustained` alert (at `windows` 5). 5d1cd91 made
every unscored window restart the runs: with 1 window in 4 unscored, 120 windows of severe pain raised
none."""

from __future__ import annotations

from support.stream_events import kinds
from support.stream_session import Socket, Triton, audio, hub, open_stream, run

from preprocess_service.stream.alerts import AlertMonitor, Window
from preprocess_service.stream.protocol import CLOSE_NORMAL, StreamConfig

CONFIG = StreamConfig(threshold=6, windows=5, clear_windows=5)


def window(i: int, score: float, weight: float = 0.5) -> Window:
    return Window(i, float(i), i + 3.0, score, score - 1, score + 1, "x", weight, weight)


def test_an_outage_between_two_bouts_of_pain_does_not_join_them_into_an_alert():
    mon, events = AlertMonitor(CONFIG), []
    for i in range(3):
        events += mon.feed(window(i, 8.0))
    for i in range(3, 603):  # ten minutes the model could not score
        mon.unscored(float(i))
    for i in range(603, 605):
        events += mon.feed(window(i, 8.0))
    assert not kinds(events, "alert")
    for i in range(605, 608):  # pain that persists after the outage still alerts
        events += mon.feed(window(i, 8.0))
    assert [e["window"] for e in kinds(events, "alert")] == [607]


def test_sustained_pain_with_one_window_in_four_unscored_alerts():
    mon, events = AlertMonitor(CONFIG), []
    for i in range(120):
        if i % 4 == 3:  # e.g. refused while the model is overloaded
            mon.unscored(float(i))
        else:
            events += mon.feed(window(i, 8.5))
    assert [e["window"] for e in kinds(events, "alert")] == [5]  # 0-2 and 4-5: five counted windows
    assert mon.alerting  # before: no alert at all, the run restarted every fourth window


def test_unscored_windows_restart_the_run_once_they_span_three_seconds():
    for gap, alerted in ((2, [6]), (3, [10])):  # 2 unscored windows: the run goes on; 3 (3 s): it restarts
        mon, events = AlertMonitor(CONFIG), []
        for i in range(3):
            events += mon.feed(window(i, 8.0))
        for i in range(3, 3 + gap):
            mon.unscored(float(i))
        for i in range(3 + gap, 11):
            events += mon.feed(window(i, 8.0))
        assert [e["window"] for e in kinds(events, "alert")][:1] == alerted, gap
    # the span is fixed, not signal_timeout_s: a stream that allows its modalities 60 s of lag would otherwise
    # join pain across a minute-long outage into one run
    mon = AlertMonitor(StreamConfig(threshold=6, windows=5, signal_timeout_s=60))
    for i in range(3):
        mon.feed(window(i, 8.0))
    for i in range(3, 6):
        mon.unscored(float(i))
    assert mon.run == 0


def test_calm_on_both_sides_of_an_unknown_window_does_not_clear_an_alert():
    for unknown, cleared in (("unscored", 15), ("no_signal", 13), ("one_unscored", 10)):
        mon, events = AlertMonitor(CONFIG), []
        for i in range(5):
            events += mon.feed(window(i, 8.0))
        assert kinds(events, "alert")
        for i in range(5, 8):
            events += mon.feed(window(i, 2.0))
        if unknown == "unscored":  # a gap: 3 windows (alerts.OUTAGE_GAP_S)
            for i in range(8, 11):
                mon.unscored(float(i))
        elif unknown == "one_unscored":  # by itself it breaks nothing: 8 is left out of the calm run
            mon.unscored(8.0)
        else:
            events += mon.feed(window(8, 5.7, weight=0.0))
        for i in range(11 if unknown == "unscored" else 9, cleared):
            events += mon.feed(window(i, 2.0))
        assert not kinds(events, "alert_cleared") and mon.alerting, unknown
        events += mon.feed(window(cleared, 2.0))
        assert [e["window"] for e in kinds(events, "alert_cleared")] == [cleared], unknown


class _DownFrom(Triton):
    """Scores 8 until window `first_down`; a call that begins there or later fails."""

    def __init__(self, first_down: int) -> None:
        super().__init__(8.0)
        self.first_down = first_down

    async def infer(self, inputs: dict, request_id: str | None = None):
        self.down = int(str(request_id).rsplit("-", 1)[1]) >= self.first_down
        return await super().infer(inputs, request_id)


def test_an_unscored_gap_survives_a_checkpoint():
    mon = AlertMonitor(CONFIG)
    for i in range(3):
        mon.feed(window(i, 8.0))
    for i in range(3, 5):
        mon.unscored(float(i))
    restored = AlertMonitor(CONFIG)
    restored.restore(mon.snapshot(5.0))
    restored.unscored(5.0)  # the third in a row
    assert restored.run == 0


def _session(triton: Triton, chunks: int):
    """`chunks` audio chunks and `end` through the session, scored by `triton`: (entry, socket)."""
    the_hub = hub(triton=triton)
    entry = open_stream(the_hub, config=CONFIG.model_dump())
    socket = Socket([audio(k) for k in range(chunks)], pace_s=0.005)
    socket.messages.append({"type": "websocket.receive", "text": '{"type": "end"}'})
    assert run(the_hub, entry, socket) == CLOSE_NORMAL
    return entry, socket


def test_the_session_tells_the_alert_logic_of_a_window_it_could_not_score():
    entry, socket = _session(_DownFrom(3), 80)
    assert kinds(socket.sent, "score") and socket.errors("unavailable")
    assert entry.monitor.run == 0  # before: the windows scored before the outage, still counting


class _DownAt(Triton):
    """Scores 8; the call that begins at window `window` fails (refused while overloaded, say)."""

    def __init__(self, window: int) -> None:
        super().__init__(8.0)
        self.window = window

    async def infer(self, inputs: dict, request_id: str | None = None):
        self.down = int(str(request_id).rsplit("-", 1)[1]) == self.window
        return await super().infer(inputs, request_id)


def test_one_window_the_session_could_not_score_does_not_break_the_run():
    _, socket = _session(_DownAt(3), 100)
    assert socket.errors("unavailable")
    assert kinds(socket.sent, "alert")  # before: the run restarted at window 3, 4 counted windows after it


def test_a_refused_call_fails_its_own_window_not_the_batch_it_went_with():
    """A stream catching up sends several windows at once; one call refused while the model is overloaded
    failed the whole batch, so 3 windows went unscored (a gap) and severe pain with 1 call in 6 refused
    never alerted."""
    import asyncio

    import numpy as np

    from avpenet import contract
    from preprocess_service.stream.scoring import score_windows
    from preprocess_service.stream.state import ReadyWindow

    class Overloaded(Triton):
        def __init__(self) -> None:
            super().__init__(8.5)
            self.ids: list[str] = []

        async def infer(self, inputs: dict, request_id: str | None = None):
            self.ids.append(str(request_id))
            self.down = len(self.ids) % 6 == 0  # one call in six refused
            return await super().infer(inputs, request_id)

    triton, mon, events, unscored = Overloaded(), AlertMonitor(CONFIG), [], 0
    inputs = {contract.AGE_GROUP.name: np.array([[1]])}

    async def stream() -> None:
        nonlocal events, unscored
        for batch in range(20):
            ready = [ReadyWindow(i, i, i + 3, inputs, True, True) for i in range(3 * batch, 3 * batch + 3)]
            scored, version = await score_windows(triton, ready, "bed-1")
            assert version is not None
            for w, got in zip(ready, scored, strict=True):
                if isinstance(got, Exception):
                    mon.unscored(w.start_s)
                    unscored += 1
                else:
                    events += mon.feed(got)

    asyncio.run(stream())
    assert unscored == 10 and triton.ids[:3] == ["bed-1-0", "bed-1-1", "bed-1-2"]  # one id a window
    assert kinds(events, "alert")  # before: 30 windows unscored and no alert
