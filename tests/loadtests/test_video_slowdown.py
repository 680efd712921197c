"""loadtests.video_slowdown's parts that need no stack: the hog ends on time and the summary says when
each kind of failure was answered (the full run is a measurement for docs: preprocess_service/README.md)."""

from __future__ import annotations

import time

import pytest

from loadtests import bench, clips, video_slowdown


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


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--measure-s", "nan"], "is not a number above 0"),
        (["--hog-s", "0"], "is not a number above 0"),
        (["--hog-at", "-1"], "is not a number of 0 seconds or more"),
        (["--hog-procs", "-2"], "is not a whole number of 0 or more"),
        (["--concurrency", "0"], "is not a whole number of 1 or more"),
    ],
)
def test_bad_numbers_are_refused_when_parsed_before_the_stack_starts(argv, says, monkeypatch, capsys):
    """A NaN window measured nothing and a negative hog ran none, after the clips were built and the stack
    had started (minutes); now the parser refuses them."""
    monkeypatch.setattr(clips, "build", lambda *a: pytest.fail("clips built"))
    with pytest.raises(SystemExit) as exit_:
        video_slowdown.main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err
