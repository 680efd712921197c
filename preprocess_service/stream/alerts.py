"""Alert logic of one stream, pure (no I/O, no clock): window scores in, events out.

- Baseline: windows ending within the first `baseline_s` raise no alert; their median is the patient's
  baseline, and afterwards a window counts only when score > baseline + baseline_margin as well.
- Alert: `windows` consecutive counted windows above `threshold` (on the stream's scale, e.g. NIPS-equivalent)
  raise one `alert`; `clear_windows` consecutive windows at or below it raise `alert_cleared`.
- Suppression: a window overlapping declared handling (or its grace after the end) is suppressed: it is
  reported, it neither counts toward nor clears an alert, and it restarts the run (pain must persist after
  the handling to alert).
- No signal: a window with neither modality (both weights 0) scores only the model's age prior (about 5.7,
  NIPS-equivalent 4.0, above common NIPS thresholds): reported with `no_signal`, it neither counts toward nor
  clears an alert, restarts the run, and is left out of the baseline and the trend.
- Unscored: a window the model could not score (the session's `unavailable` error: Triton down, or one call
  refused while overloaded) neither counts nor clears, nor by itself breaks a run: the run and the calm count
  go on across it (with 1 window in 4 unscored, sustained pain still alerts). Unscored windows in a row whose
  hops add up to OUTAGE_GAP_S (3 s: a hop, 1 s, each, so 3 windows; a fixed span, not a stream setting) are a
  gap: they restart both runs, so an outage does not join the pain before and after it into one sustained
  alert (10 minutes apart: 3 windows and 2 alerted at `windows` 5). Before 5d1cd91 it was never fed here (an
  outage joined the bouts); 5d1cd91 made every unscored window restart both runs (1 in 4 unscored: no alert).
  A failed call fails its own window only (scoring.py), not the batch it went out with.
- A window that neither counts nor clears and is scored (suppressed, no signal) also restarts the calm run of
  an alert that is on: `clear_windows` calm windows in a row clear it, not calm windows on both sides of it.
- Trend: exponentially smoothed score plus the slope (points per minute) of the last TREND_SPAN windows.
- Checkpoint: `snapshot` is this state as plain data, `restore` continues it in a new stream whose time 0 is
  where the snapshot was taken (checkpoints.py: a stream whose replica is gone keeps its alert state).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from avpenet import contract
from preprocess_service.protocol import AgeRead
from preprocess_service.stream.protocol import StreamConfig, on_scale

TREND_SPAN = 60  # windows (one minute) the trend's slope is fitted over


# Unscored windows in a row whose hops add up to this are an outage, not a lost call: the runs restart.
OUTAGE_GAP_S: float = contract.WINDOW_SECONDS


@dataclass(frozen=True)
class Window:
    """One scored window, as the model answered it (scores on the model's 0-10 scale)."""

    index: int
    start_s: float
    end_s: float
    score: float
    low: float
    high: float
    level: str
    audio_weight: float
    visual_weight: float
    adult_probability: float | None = None  # P(adult) read, for a stream opened without an age group


@dataclass
class Handling:
    """Declared handling periods in media seconds; an open period has end None. Bounded: a period reopened
    within `grace_s` of its end goes on (exactly the same windows are suppressed: one suppressed by neither
    would start after the old end plus the grace and end before the new start), and the windows fed drop the
    periods no later window can reach (`forget_before`). Before, each off/on pair added a period until a
    window was scored: a client toggling it between windows grew the list, and each checkpoint's copy of it,
    without limit (200,000 periods: 0.23 s per checkpoint, on the event loop)."""

    periods: list[tuple[float, float | None]] = field(default_factory=list)
    grace_s: float = 0.0

    def set(self, active: bool, at_s: float) -> bool:
        """Open or close a period at media time at_s; False when nothing changes (already in that state)."""
        open_ = bool(self.periods) and self.periods[-1][1] is None
        if active == open_:
            return False
        if not active:
            self.periods[-1] = (self.periods[-1][0], max(at_s, self.periods[-1][0]))
        elif self.periods and at_s <= self.periods[-1][1] + self.grace_s:
            self.periods[-1] = (self.periods[-1][0], None)
        else:
            self.periods.append((at_s, None))
        return True

    def covers(self, start_s: float, end_s: float, grace_s: float) -> bool:
        for begin, stop in self.periods:
            if begin < end_s and (stop is None or start_s < stop + grace_s):
                return True
        return False

    def forget_before(self, t_s: float, grace_s: float) -> None:
        """Drop closed periods no window starting at t_s or later can touch (keeps the list bounded)."""
        self.periods = [p for p in self.periods if p[1] is None or p[1] + grace_s > t_s]


class AlertMonitor:
    """Feeds window scores in order and says which events they raise."""

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self.handling = Handling(grace_s=config.handling_grace_s)
        self.baseline_scores: list[float] = []
        self.baseline: float | None = None
        self.run = 0  # consecutive counted windows above the threshold
        self.calm = 0  # consecutive windows at or below it while alerting
        self.unscored_s = 0.0  # media seconds of the unscored windows in a row just before (`unscored`)
        self.run_start_s = 0.0
        self.alerting = False
        self.trend: float | None = None
        self.recent: list[tuple[float, float]] = []  # (end_s, score) of the last TREND_SPAN windows
        self.n = 0
        self.origin_s = 0.0  # media seconds monitored before this stream's time 0 (a restored stream)

    def threshold(self) -> float:
        """The effective threshold on the stream's scale (the baseline rule included)."""
        if self.baseline is None:
            return self.config.threshold
        return max(
            self.config.threshold, on_scale(self.baseline, self.config.scale) + self.config.baseline_margin
        )

    def feed(self, w: Window) -> list[dict]:
        cfg = self.config
        self.unscored_s = 0.0
        in_baseline = w.end_s + self.origin_s <= cfg.baseline_s
        suppressed = self.handling.covers(w.start_s, w.end_s, cfg.handling_grace_s)
        self.handling.forget_before(w.start_s, cfg.handling_grace_s)
        value = on_scale(w.score, cfg.scale)
        # neither modality: the score is the model's age prior (about 5.7, NIPS 4.0), not the patient's
        no_signal = w.audio_weight + w.visual_weight == 0
        events = [self._score_event(w, value, suppressed, in_baseline) | {"no_signal": no_signal}]
        if in_baseline:
            if not (suppressed or no_signal):  # handling or no signal is not the baseline
                self.baseline_scores.append(w.score)
        else:
            if self.baseline is None and self.baseline_scores:
                self.baseline = float(statistics.median(self.baseline_scores))
            events += self._alerting(w, value, suppressed or no_signal)  # neither counts nor clears
        if not no_signal:
            events += self._trend(w)
        return events

    def unscored(self, start_s: float) -> None:
        """A window that was not scored: unknown, neither extending nor breaking a run by itself; once the
        unscored windows in a row add up to OUTAGE_GAP_S (a hop each: a gap), both runs restart."""
        self.unscored_s += contract.HOP_SECONDS
        if self.unscored_s >= OUTAGE_GAP_S - 1e-9:
            self._alerting(None, 0.0, True)
        self.handling.forget_before(start_s, self.config.handling_grace_s)

    def snapshot(self, now_s: float) -> dict:
        """The state as plain data, its times relative to media time `now_s` (so at most 0)."""

        def rel(t: float) -> float:
            return round(t - now_s, 3)

        waiting = [] if self.baseline is not None else [round(x, 4) for x in self.baseline_scores]
        return {
            "elapsed_s": round(now_s + self.origin_s, 3),
            "baseline": self.baseline, "baseline_scores": waiting, "alerting": self.alerting,
            "run": self.run, "calm": self.calm, "run_start_s": rel(self.run_start_s),
            "unscored_s": self.unscored_s,
            "trend": self.trend, "n": self.n,
            "recent": [(rel(t), x) for t, x in self.recent],
            "handling": [(rel(b), None if e is None else rel(e)) for b, e in self.handling.periods],
        }  # fmt: skip

    def restore(self, snap: dict) -> None:
        """Continue a `snapshot` from this stream's time 0: the baseline period only for what it had left, the
        run, an alert on, the trend and an open handling period carry on."""
        self.origin_s = float(snap["elapsed_s"])
        self.baseline, self.baseline_scores = snap["baseline"], list(snap["baseline_scores"])
        self.run, self.calm = int(snap["run"]), int(snap["calm"])
        self.unscored_s = float(snap.get("unscored_s", 0.0))  # absent from checkpoints written before it
        self.run_start_s, self.alerting = float(snap["run_start_s"]), bool(snap["alerting"])
        self.trend, self.n = snap["trend"], int(snap["n"])
        self.recent = [(float(t), float(x)) for t, x in snap["recent"]]
        self.handling.periods = [(float(b), None if e is None else float(e)) for b, e in snap["handling"]]

    def _score_event(self, w: Window, value: float, suppressed: bool, in_baseline: bool) -> dict:
        read = (
            {}
            if w.adult_probability is None
            else {"age_read": AgeRead.of(w.adult_probability).model_dump(exclude={"contradicts_age_group"})}
        )
        return {
            "type": "score", "window": w.index, "start_s": w.start_s, "end_s": w.end_s,
            "score": round(w.score, 4), "scaled": round(value, 4), "scale": self.config.scale,
            "level": w.level, "interval_90": {"low": round(w.low, 4), "high": round(w.high, 4)},
            "modality_weights": {"audio": round(w.audio_weight, 4), "visual": round(w.visual_weight, 4)},
            "suppressed": suppressed, "baseline": in_baseline,
            **read,
        }  # fmt: skip

    def _alerting(self, w: Window | None, value: float, suppressed: bool) -> list[dict]:
        cfg = self.config
        if suppressed:  # unknown: neither run goes on across it
            self.run = self.calm = 0
            return []
        limit = self.threshold()
        if value > limit:
            if self.run == 0:
                self.run_start_s = w.start_s
            self.run += 1
            self.calm = 0
            if not self.alerting and self.run >= cfg.windows:
                self.alerting = True
                return [{
                    "type": "alert", "window": w.index, "at_s": w.end_s, "since_s": self.run_start_s,
                    "score": round(w.score, 4), "scaled": round(value, 4), "threshold": round(limit, 4),
                    "scale": cfg.scale, "windows": self.run,
                }]  # fmt: skip
            return []
        self.run = 0
        if self.alerting:
            self.calm += 1
            if self.calm >= cfg.clear_windows:
                self.alerting = False
                self.calm = 0
                return [
                    {"type": "alert_cleared", "window": w.index, "at_s": w.end_s, "scaled": round(value, 4)}
                ]
        return []

    def _trend(self, w: Window) -> list[dict]:
        a = self.config.trend_alpha
        self.trend = w.score if self.trend is None else a * w.score + (1 - a) * self.trend
        self.recent = [*self.recent[-(TREND_SPAN - 1) :], (w.end_s, w.score)]
        self.n += 1
        if self.n % self.config.trend_every:
            return []
        slope = 0.0
        if len(self.recent) >= 2:
            t, s = np.array(self.recent).T
            slope = float(np.polyfit(t, s, 1)[0]) * 60.0
        return [{
            "type": "trend", "window": w.index, "at_s": w.end_s, "trend": round(self.trend, 4),
            "scaled": round(on_scale(self.trend, self.config.scale), 4), "slope_per_min": round(slope, 4),
        }]  # fmt: skip
