"""`avpenet calibrate`: the interval scale refitted on a split's validation subjects, nothing else moved.

Runs on the session's tiny training run: recalibrating on the run's own validation clips must give back the
scale the training run fitted (the same function on the same clips), and on other subjects the scale a
hand computation of the 90% quantile gives, with every weight but the scale unchanged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avpenet import contract as C
from avpenet import data
from avpenet.aggregate import Z_INTERVAL
from avpenet.model import load_model
from avpenet.predict import predict_clips


def _calibrate(run_dir, tiny_set, split_path, out):
    from cli.main import main

    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(tiny_set), "--out", str(out)]
    assert main([*args, "--split", str(split_path), "--quiet"]) == 0
    return json.loads((out / "config.json").read_text())


def test_own_validation_clips_give_back_the_training_runs_scale(tiny_run, tiny_set, tmp_path):
    run_dir, config = tiny_run
    new = _calibrate(run_dir, tiny_set, run_dir / "split.json", tmp_path / "same")
    assert new["interval_scale"] == pytest.approx(config["interval_scale"], rel=1e-5)
    assert new["history"] == config["history"]  # the training record is kept
    assert (tmp_path / "same" / "split.json").read_text() == (run_dir / "split.json").read_text()


def test_other_validation_subjects_refit_only_the_scale(tiny_run, tiny_set, tmp_path):
    run_dir, config = tiny_run
    split = data.read_split(run_dir / "split.json")
    other = {"train": split["val"], "val": split["train"], "test": split["test"]}  # val = the train subjects
    data.write_split(other, tmp_path / "other.json")
    new = _calibrate(run_dir, tiny_set, tmp_path / "other.json", tmp_path / "other")

    record = new["interval_calibration"]
    assert record["val_subjects"] == sorted(other["val"]) and not set(record["val_subjects"]) & set(
        split["test"]
    )
    clips = data.load_clips(tiny_set, other["val"], progress=False)
    assert record["val_clips"] == len(clips) > 0
    model = load_model(run_dir).model
    model.fusion.interval_scale.fill_(1.0)
    pred = predict_clips(model, [dict(c.inputs) for c in clips])
    y = np.array([c.score for c in clips])
    z = np.abs(y - pred[C.SCORE.name]) / np.exp(0.5 * pred[C.LOG_VARIANCE.name]) / Z_INTERVAL
    assert new["interval_scale"] == pytest.approx(float(np.quantile(z, C.INTERVAL_COVERAGE)), rel=1e-4)
    assert record["scale_before"] == pytest.approx(config["interval_scale"], rel=1e-5)

    before, after = load_model(run_dir).model.state_dict(), load_model(tmp_path / "other").model.state_dict()
    moved = [name for name, a in before.items() if not torch.equal(a, after[name])]
    assert moved == ["fusion.interval_scale"]
    assert float(after["fusion.interval_scale"]) == pytest.approx(new["interval_scale"], rel=1e-5)
