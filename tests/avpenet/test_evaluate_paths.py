"""Every input path judged on its own (avpenet.evaluate_paths): rows rebuilt per upload, subject bootstrap."""

from __future__ import annotations

import numpy as np

from avpenet import data
from avpenet.evaluate_paths import PATHS, evaluate_paths, path_row, subject_bootstrap, subject_ci
from avpenet.model import REFERENCE_DIR, load_model

ROW = {"clip_id": "c", "subject_id": "s", "audio": "a.wav", "visual": "v.npz", "video": "m.mp4"}


def test_rows_carry_what_each_upload_carries():
    assert path_row(ROW, "video") == ROW  # the MP4 wins over the .npz in the reader: nothing to blank
    assert path_row(ROW, "audio_landmarks") == {**ROW, "video": ""}
    assert path_row(ROW, "audio_only") == {**ROW, "visual": "", "video": ""}
    assert path_row(ROW, "landmarks_only") == {**ROW, "audio": "", "video": ""}
    assert path_row({**ROW, "video": ""}, "video") is None  # no MP4: the clip has no video path
    assert path_row({**ROW, "audio": ""}, "audio_only") is None


def test_bootstrap_resamples_subjects():
    true = np.repeat([2.0, 5.0, 8.0, 3.0], 5)
    pred = true + np.repeat([0.1, 0.1, 0.1, 3.0], 5)  # one subject is far off
    ci = subject_bootstrap(pred, true, np.repeat(list("abcd"), 5), n=300)
    mae = np.abs(pred - true).mean()
    assert ci["mae"][0] < mae < ci["mae"][1]
    assert ci["mae"][0] <= 0.15 and ci["mae"][1] >= 1.5  # a subject's clips move together


def test_each_path_on_a_synthetic_set(tiny_set):
    rows = data.read_labels(tiny_set)
    subjects = sorted({r["subject_id"] for r in rows})[:4]
    ckpt = load_model(REFERENCE_DIR)
    out = evaluate_paths(ckpt.model, tiny_set, rows, subjects, "both")
    assert "video" not in out  # this set has no MP4
    for path in set(PATHS) - {"video"}:
        need = PATHS[path][1]
        expected = sum(1 for r in rows if r["subject_id"] in subjects and r[need])
        assert out[path]["n"] == expected
        assert out[path]["ci95"] is None  # 4 subjects: no interval (test_no_interval_on_too_few_subjects)
        assert out[path]["ci95_not_given"] == "4 subjects; a subject-bootstrap interval needs at least 5"


def test_no_interval_on_too_few_subjects():
    """One subject gave a zero-width "95% CI" (every resample is that subject)."""
    true = np.repeat([2.0, 5.0, 8.0, 3.0, 6.0], 4)
    pred = true + np.repeat([0.1, 0.4, 0.1, 3.0, 0.2], 4)
    one = subject_ci(pred[:4], true[:4], ["a"] * 4)
    assert one == {"ci95": None, "ci95_not_given": "1 subject; a subject-bootstrap interval needs at least 5"}
    five = subject_ci(pred, true, np.repeat(list("abcde"), 4))["ci95"]
    assert five["mae"][0] < np.abs(pred - true).mean() < five["mae"][1]
