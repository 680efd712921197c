"""loadtests.video_slowdown's parts that need no stack: the hog ends on time and the summary says when
each kind of failure was answered (the full run is a measurement for docs: preprocess_service/README.md)."""

from __future__ import annotations

import time

from loadtests import bench, video_slowdown


def test_the_hog_keeps_its_processes_busy_for_the_time_given_and_stops():
    start = time.monotonic()
    video_slowdown.hog(2, 0.3)
    assert 0.3 <= time.monotonic() - start < 30.0  # generous: process start-up on a loaded box


def test_the_summary_reads_clips_failures_by_kind_and_the_share(refused):
    done = [bench.Done(1.0, 900.0 + i, True) for i in range(30)]
    done += [refused(21_000.0, 503, "FeaturesUnavailable"), refused(120.0, 429, "Overloaded")]
    text = video_slowdown.summary(done, 10.0, (0.8, None))
    assert text.startswith("answered 30 clips in 10 s (3.00 clips/s)")
    assert "HTTP 503 FeaturesUnavailable x1: answered after 21.0 s" in text
    assert "HTTP 429 Overloaded x1: answered after 0.1 s" in text
    assert text.endswith("video admission share: 0.80 -> not read")
