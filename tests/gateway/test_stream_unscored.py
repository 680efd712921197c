"""A window the model could not score (Triton down: `unavailable`) is unknown to the alert logic, as a window
without signal is. Before, it was simply never fed to it, so the windows on both sides of an outage counted
as one run: 3 s of pain, a 10-minute outage, 2 s of pain raised a `sustained` alert (at `windows` 5)."""

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


def test_calm_on_both_sides_of_an_unknown_window_does_not_clear_an_alert():
    for unknown in ("unscored", "no_signal"):
        mon, events = AlertMonitor(CONFIG), []
        for i in range(5):
            events += mon.feed(window(i, 8.0))
        assert kinds(events, "alert")
        for i in range(5, 8):
            events += mon.feed(window(i, 2.0))
        if unknown == "unscored":
            mon.unscored(8.0)
        else:
            events += mon.feed(window(8, 5.7, weight=0.0))
        for i in range(9, 13):
            events += mon.feed(window(i, 2.0))
        assert not kinds(events, "alert_cleared") and mon.alerting, unknown
        events += mon.feed(window(13, 2.0))
        assert [e["window"] for e in kinds(events, "alert_cleared")] == [13], unknown


class _DownFrom(Triton):
    """Scores 8 until window `first_down`; a call that begins there or later fails."""

    def __init__(self, first_down: int) -> None:
        super().__init__(8.0)
        self.first_down = first_down

    async def infer(self, inputs: dict, request_id: str | None = None):
        self.down = int(str(request_id).rsplit("-", 1)[1]) >= self.first_down
        return await super().infer(inputs, request_id)


def test_the_session_tells_the_alert_logic_of_a_window_it_could_not_score():
    the_hub = hub(triton=_DownFrom(3))
    entry = open_stream(the_hub, config=CONFIG.model_dump())
    socket = Socket([audio(k) for k in range(80)], pace_s=0.005)
    socket.messages.append({"type": "websocket.receive", "text": '{"type": "end"}'})
    assert run(the_hub, entry, socket) == CLOSE_NORMAL
    assert kinds(socket.sent, "score") and socket.errors("unavailable")
    assert entry.monitor.run == 0  # before: the windows scored before the outage, still counting
