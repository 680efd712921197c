"""A rendered clip is tracked once: `avpenet synth` stamps the .npz it wrote from tracking its MP4, and the
dataset reader reuses that .npz as the video's face only when the stamp matches — the reused track must equal
what the real tracker returns for that MP4, and any change to the MP4 or the .npz sends it back to the
tracker."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.rendered_set import render_one_clip

from avpenet import machine
from avpenet.features import cache, tracked, tracker


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One AVPE-Synth clip rendered to MP4 (and tracked) by the generator's own code path."""
    root = tmp_path_factory.mktemp("tracked_once")
    return root, render_one_clip(root)


def _counting_tracker(monkeypatch) -> list[int]:
    """One entry per clip tracked: `track_frames` runs once per tracking, by `track_video` or by `avclip` (a
    row whose MP4 also carries the sound), on a new or a pooled landmarker."""
    calls: list[int] = []
    real = tracker.FaceTracker.track_frames

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tracker.FaceTracker, "track_frames", counted)
    return calls


def test_stamped_npz_is_reused_and_equals_the_tracker_on_that_mp4(rendered, monkeypatch):
    root, row = rendered
    assert tracked.stamp_path(root / row["visual"]).exists()
    calls = _counting_tracker(monkeypatch)
    _, reused, source = cache.decode_row(root, row)
    assert calls == [] and source == "video"  # the stamp was honoured: no second tracking
    fresh = tracker.track_video((root / row["video"]).read_bytes())
    assert fresh.face_present.mean() > 0.5  # a real face track, not an empty one
    for name, arr in fresh.arrays().items():
        np.testing.assert_allclose(reused.arrays()[name], arr, atol=1e-6, err_msg=name)


def test_a_changed_mp4_or_npz_is_tracked_again(rendered, monkeypatch):
    root, row = rendered
    calls = _counting_tracker(monkeypatch)
    npz = root / row["visual"]
    stamp = tracked.stamp_path(npz)
    original = npz.read_bytes()
    try:
        npz.write_bytes(original + b"\0")  # the .npz is no longer the stamped file
        _, track, source = cache.decode_row(root, row)
        assert calls == [1] and source == "video" and track.face_present.any()
    finally:
        npz.write_bytes(original)
    text = stamp.read_text()
    try:
        stamp.write_text(text.replace('"video_sha256": "', '"video_sha256": "0'))
        cache.decode_row(root, row)
        assert calls == [1, 1]  # a stamp naming another MP4 is not trusted
    finally:
        stamp.write_text(text)


def test_the_stamp_names_the_machine_and_another_machines_stamp_still_holds(rendered, monkeypatch):
    """A track made on another CPU is still this MP4's tracking (it differs in its last bits only): it is
    reused, and the machine its stamp names is what the reader reports, not the one reading it."""
    root, row = rendered
    stamp = tracked.stamp_path(root / row["visual"])
    text = stamp.read_text()
    here = machine.describe(machine.TRACKING_PACKAGES)
    assert json.loads(text)[tracked.MACHINE_KEY] == here
    assert cache.decode(root, row).tracked_on == here
    calls = _counting_tracker(monkeypatch)
    other = {**json.loads(text), tracked.MACHINE_KEY: "Another CPU [avx2 fma avx512f]; mediapipe 1.2.3"}
    try:
        stamp.write_text(json.dumps(other))
        assert cache.decode(root, row).tracked_on == other[tracked.MACHINE_KEY]
        del other[tracked.MACHINE_KEY]  # a stamp written before machines were recorded
        stamp.write_text(json.dumps(other))
        assert cache.decode(root, row).tracked_on == tracked.NOT_RECORDED
        assert calls == []  # neither sent the MP4 back to the tracker
    finally:
        stamp.write_text(text)


def test_features_reports_renders_tracked_again_when_the_tracking_changes(rendered, monkeypatch):
    """`avpenet features` counts the MP4s it had to track: none while the stamp holds, every one once the
    tracking version moves on (the cache entry goes stale with it)."""
    root, _ = rendered
    first = cache.build_cache(root, workers=1, progress=False)
    assert first["failed"] == 0 and first["tracked_this_run"] == 0
    assert first["tracked_on"] == {machine.describe(machine.TRACKING_PACKAGES): 1}
    calls = _counting_tracker(monkeypatch)
    monkeypatch.setattr(tracked, "TRACKING_VERSION", tracked.TRACKING_VERSION + 1)
    again = cache.build_cache(root, workers=1, progress=False)
    assert again["extracted"] == 1 and again["tracked_this_run"] == 1 and calls == [1]
