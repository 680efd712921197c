"""Counts the container opens and MP4 sample-table walks a piece of code makes (the demux-once property)."""

from __future__ import annotations

import av

from avpenet.features import media, mp4index


def count_opens(monkeypatch) -> dict[str, int]:
    """Patch av.open and the sample-table walk to count calls; the returned dict fills as they happen."""
    counts = {"av.open": 0, "sample tables": 0}
    real_open, real_walk = av.open, mp4index.check_sample_tables

    def counted_open(*args, **kwargs):
        counts["av.open"] += kwargs.get("mode", "r") == "r"  # reads only (test media is written with it)
        return real_open(*args, **kwargs)

    def counted_walk(*args, **kwargs):
        counts["sample tables"] += 1
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(media.av, "open", counted_open)
    monkeypatch.setattr(media, "check_sample_tables", counted_walk)
    monkeypatch.setattr(mp4index, "check_sample_tables", counted_walk)
    return counts


def record_av_opens(monkeypatch) -> list[dict]:
    """Patch av.open to record the keyword arguments of each call (demuxer, options); the list fills as
    they happen."""
    calls: list[dict] = []
    real_open = av.open

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(media.av, "open", spy)
    return calls
