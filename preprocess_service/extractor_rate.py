"""What video admission measures: the media seconds the FeatureExtractor finishes per second it has work.

The measurement behind `video_admission.MediaSecondsLimiter` (preprocess_service/README.md, *Admission*): an
exponentially weighted rate, and each started clip's share of its busy time, so a clip that fails without
reporting what it processed is weighed at the rate of the rest (at most its own length) instead of reading
as media never done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class DecayedRate:
    """Media seconds finished per second of busy time, both exponentially weighted with time constant `tau_s`
    (the caller advances it only while work is in flight, so idle time does not read as slowness)."""

    def __init__(self, tau_s: float) -> None:
        self.tau_s = tau_s
        self.done_s = 0.0  # media seconds finished, decayed
        self.busy_s = 0.0  # seconds with work in flight, decayed the same way

    def advance(self, dt: float) -> float:
        """Weigh `dt` more busy seconds; returns the decay applied to what was weighed before."""
        decay = math.exp(-dt / self.tau_s)
        self.done_s *= decay
        self.busy_s = self.busy_s * decay + dt
        return decay

    def finished(self, seconds: float) -> None:
        self.done_s += seconds

    def as_the_rest(self, busy_s: float, at_most_s: float = math.inf) -> None:
        """Weigh `busy_s` of the busy time as done at the rate of the rest, but at most `at_most_s` (the
        clip's own length), so it does not raise the rate and lowers it only when the clip took longer than
        the rest say its length takes (an extractor that really slowed: its clips are cut at their deadline).
        Taking it back instead would still age the rest by its time: repeated such clips reset the rate to
        unmeasured. With nothing else measured it is taken back."""
        rest_s = self.busy_s - busy_s
        if rest_s > 1e-9 and self.done_s > 0:
            self.done_s += min(self.done_s * busy_s / rest_s, at_most_s)
        else:
            self.busy_s = max(0.0, rest_s)

    def value(self, min_busy_s: float) -> float | None:
        """The rate, or None while under `min_busy_s` of busy time or nothing finished is weighed."""
        return self.done_s / self.busy_s if self.busy_s >= min_busy_s and self.done_s > 0 else None


@dataclass(eq=False)
class Held:
    """One clip started at the extractor: its seconds and its share of each rate's busy time (decayed as that
    rate's is), so a clip that fails without a report can be weighed apart from the rest."""

    seconds: float
    busy: list[float] = field(default_factory=lambda: [0.0, 0.0])  # of `long`, of `recent`
