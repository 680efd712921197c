"""A render of some parts of the training set's plan (`avpenet synth --parts val`) holds subjects the
checkpoint trained or validated on, though its labels.csv, so its digest, differs from the training set's:
evaluate and calibrate recognise it by the plan both record (DIR/plan.json, the run's config "data.plan")
and use the checkpoint's split, as for the training set itself. A checkpoint that records no plan (trained
before plans were, such as the committed reference) is matched by its labels digest against a whole render of
the set's plan; a set without plan.json is judged by its digest alone, as before."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from avpenet import data, evaluate
from cli.main import main


@pytest.fixture(scope="module")
def parts(tiny_run, tiny_set, tmp_path_factory):
    """{part: a render of only that part's subjects of tiny_set's plan}."""
    from avpenet.synth import dataset

    split = data.read_split(tiny_run[0] / data.SPLIT_FILE)
    plan = data.read_plan(tiny_set)
    out = {}
    for part in ("val", "test"):
        out[part] = tmp_path_factory.mktemp(part) / "synth"
        dataset.generate(
            out[part], seed=plan["seed"], n_subjects=plan["n_subjects"], n_clips=plan["n_clips"],
            render=dataset.recorded_render(plan), workers=1, progress=False, subjects=split[part],
        )  # fmt: skip
    return out


def _choose(run_dir, config, data_dir):
    args = argparse.Namespace(data=data_dir, checkpoint=run_dir, split=None)
    return evaluate.choose_subjects(args, config, data.read_labels(data_dir))


def test_evaluate_takes_a_partial_render_of_the_training_plan_as_seen(tiny_run, tiny_set, parts, tmp_path):
    run_dir, config = tiny_run
    split = data.read_split(run_dir / data.SPLIT_FILE)
    plan = data.read_plan(parts["val"])
    assert plan == data.read_plan(tiny_set) == config["data"]["plan"] and plan["n_clips"] == 40
    assert data.labels_digest(parts["val"]) != config["data"]["labels_sha256"]
    for part in ("val", "test"):
        subjects, source = _choose(run_dir, config, parts[part])
        assert subjects == split["test"] and "a render of the plan it was trained on (seed 5" in source
    args = argparse.Namespace(data=parts["val"], checkpoint=run_dir, split=None, quiet=True)
    with pytest.raises(ValueError, match="no clips of the test subjects"):  # validation: not held out
        evaluate.evaluate(args)

    # a checkpoint that records no plan (trained before plans were, as the committed reference): its labels
    # digest is matched against a whole render of the set's plan, so the partial render is still seen data
    unplanned = {**config, "data": {k: v for k, v in config["data"].items() if k != "plan"}}
    subjects, source = _choose(run_dir, unplanned, parts["val"])
    assert subjects == split["test"] and "a render of the plan it was trained on" in source
    # ... unless that digest is another set's; and a set without plan.json: the digest alone decides
    other = {**unplanned, "data": {**unplanned["data"], "labels_sha256": "0" * 64}}
    old_set = shutil.copytree(parts["val"], tmp_path / "old", ignore=shutil.ignore_patterns(data.PLAN_FILE))
    for cfg, folder in ((other, parts["val"]), (config, old_set)):
        subjects, source = _choose(run_dir, cfg, folder)
        assert subjects == sorted(split["val"]) and "no split.json" in source
    assert not data.same_subjects(plan, {**plan, "seed": 6})
    assert data.same_subjects(plan, {**plan, "n_clips": 9})  # other clips of the same subjects


def test_calibrate_refuses_to_add_a_partial_render_of_the_training_plan(
    tiny_run, tiny_set, parts, tmp_path, capsys
):
    run_dir, _ = tiny_run
    out = tmp_path / "x"
    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(tiny_set), "--out", str(out), "--quiet"]
    assert main([*args, "--split", str(run_dir / data.SPLIT_FILE), "--add", str(parts["test"])]) == 2
    err = capsys.readouterr().err
    assert "is a render of the plan of the --data set" in err and "training or test" in err
    assert not out.exists()


def test_calibrate_on_a_render_of_the_validation_part_uses_the_runs_split(tiny_run, parts, tmp_path):
    run_dir, config = tiny_run
    out = tmp_path / "cal"
    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(parts["val"]), "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    new = json.loads((out / "config.json").read_text())
    record = new["interval_calibration"]
    assert record["split"] == str(run_dir / data.SPLIT_FILE)
    assert record["val_subjects"] == sorted(data.read_split(run_dir / data.SPLIT_FILE)["val"])
    # the same validation clips as the training run's, so the same scale; the plan stays with the run
    assert new["interval_scale"] == pytest.approx(config["interval_scale"], rel=1e-5)
    assert new["data"]["plan"] == config["data"]["plan"]


def test_calibrate_refuses_a_part_of_the_set_a_planless_checkpoint_was_trained_on(tiny_run, parts, tmp_path):
    """The committed reference records only its labels digest: an --add render of part of its plan is still
    refused (matched through a whole render of the plan), not taken as fresh subjects."""
    from avpenet import calibrate

    _, config = tiny_run
    unplanned = {**config, "data": {k: v for k, v in config["data"].items() if k != "plan"}}
    other = shutil.copytree(parts["val"], tmp_path / "old", ignore=shutil.ignore_patterns(data.PLAN_FILE))
    with pytest.raises(ValueError, match="is a render of the plan of the set this run was trained on"):
        calibrate._fresh_sets([parts["test"]], other, data.labels_digest(other), unplanned, quiet=True)
