"""signal_lost / signal_back events of a stream: when a window's modality content changes from the last's."""

from __future__ import annotations


class Signals:
    def __init__(self, expect_audio: bool, expect_frames: bool) -> None:
        self.expected = {"audio": expect_audio, "visual": expect_frames}
        self.lost = {"audio": False, "visual": False}

    def restore(self, lost: dict) -> None:
        """The lost modalities of a checkpoint (registry.Entry.checkpoint): a stream restored on another
        replica says signal_back when one returns, as the replica that lost it would have."""
        for modality in self.lost:
            self.lost[modality] = bool(lost.get(modality, False)) and self.expected[modality]

    def events(self, index: int, start_s: float, audio_ok: bool, visual_ok: bool) -> list[dict]:
        events = []
        for modality, ok in (("audio", audio_ok), ("visual", visual_ok)):
            if not self.expected[modality] or self.lost[modality] != ok:  # unchanged
                continue
            kind = "signal_back" if ok else "signal_lost"
            events.append({"type": kind, "modality": modality, "window": index, "at_s": start_s})
            self.lost[modality] = not ok
        return events
