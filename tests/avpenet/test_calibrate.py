"""`avpenet calibrate`: the interval scale refitted on a split's validation subjects, nothing else moved.

Runs on the session's tiny training run: recalibrating on the run's own validation clips must give back the
scale the training run fitted (the same function on the same clips), and on other subjects the scale a
hand computation of the 90% quantile gives, with every weight but the scale unchanged.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avpenet import age_inference, data
from avpenet import contract as C
from avpenet.age_inference import fit_age_head
from avpenet.aggregate import Z_INTERVAL
from avpenet.model import load_model
from avpenet.predict import predict_clips, with_age

# refitted whenever the no-age scale is; the tiny run had none (1 validation subject per group), so it is
# switched on too
AGE_HEAD = ("fusion.age_head.weight", "fusion.age_head.bias", "fusion.infers_age")
REAL_MIN_SUBJECTS = age_inference.MIN_SUBJECTS_PER_GROUP  # before the fixture below lowers it


@pytest.fixture(autouse=True)
def _few_subjects_fit_the_head(monkeypatch):
    """The tiny set's splits hold 1-2 subjects per age group, too few for a real head
    (age_inference.MIN_SUBJECTS_PER_GROUP): these tests check what is refitted, not how well."""
    monkeypatch.setattr(age_inference, "MIN_SUBJECTS_PER_GROUP", 1)


def _calibrate(run_dir, tiny_set, split_path, out):
    from cli.main import main

    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(tiny_set), "--out", str(out)]
    assert main([*args, "--split", str(split_path), "--quiet"]) == 0
    return json.loads((out / "config.json").read_text())


def _hand_scale(run_dir, clips, age: str | None = None) -> float:
    """The split-conformal 90% rank, ceil((n+1)·0.9), of |error| / (z·σ) of the run's model at scale 1 on
    these clips, computed by hand (not the plain 0.9 quantile, which covers less than 90% on small sets);
    `age`: the clips sent with that age group instead of their own (for "unknown", with the age head
    refitted on these clips first, as calibration does)."""
    model = load_model(run_dir).model
    if age == "unknown":
        fit_age_head(model, [c.inputs for c in clips], [c.subject_id for c in clips])
    model.fusion.interval_scale.fill_(1.0)
    model.fusion.unknown_age_scale.fill_(1.0)
    inputs = [dict(c.inputs) for c in clips]
    for x in inputs if age else ():
        x[C.AGE_GROUP.name] = np.full_like(x[C.AGE_GROUP.name], C.age_index(age))
    pred = predict_clips(model, inputs)
    y = np.array([c.score for c in clips])
    z = np.sort(np.abs(y - pred[C.SCORE.name]) / np.exp(0.5 * pred[C.LOG_VARIANCE.name]) / Z_INTERVAL)
    return float(z[min(math.ceil((len(z) + 1) * C.INTERVAL_COVERAGE), len(z)) - 1])


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
    assert new["interval_scale"] == pytest.approx(_hand_scale(run_dir, clips), rel=1e-4)
    assert record["scale_before"] == pytest.approx(config["interval_scale"], rel=1e-5)

    before, after = load_model(run_dir).model.state_dict(), load_model(tmp_path / "other").model.state_dict()
    moved = [name for name, a in before.items() if not torch.equal(a, after[name])]
    assert set(moved) == {"fusion.interval_scale", "fusion.unknown_age_scale", *AGE_HEAD}
    assert new["age_head"] == new["interval_calibration"]["age_head"] and new["age_head"]["fitted"]
    assert float(after["fusion.interval_scale"]) == pytest.approx(new["interval_scale"], rel=1e-5)
    unknown = _hand_scale(run_dir, clips, age="unknown")
    assert new["unknown_age_interval_scale"] == pytest.approx(unknown, rel=1e-4)
    assert float(after["fusion.unknown_age_scale"]) == pytest.approx(unknown, rel=1e-5)


def test_only_unknown_age_refits_that_scale_alone_and_serves_it_to_requests_without_an_age(
    tiny_run, tiny_set, tmp_path
):
    from cli.main import main

    run_dir, config = tiny_run
    split = data.read_split(run_dir / "split.json")
    other = {"train": split["val"], "val": split["train"], "test": split["test"]}
    data.write_split(other, tmp_path / "other.json")
    out = tmp_path / "unknown"
    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(tiny_set), "--out", str(out)]
    assert main([*args, "--split", str(tmp_path / "other.json"), "--only-unknown-age", "--quiet"]) == 0
    new = json.loads((out / "config.json").read_text())

    clips = data.load_clips(tiny_set, other["val"], progress=False)
    unknown = _hand_scale(run_dir, clips, age="unknown")
    assert new["unknown_age_interval_scale"] == pytest.approx(unknown, rel=1e-4)
    assert new["interval_scale"] == config["interval_scale"]
    assert new.get("interval_calibration") == config.get("interval_calibration")
    assert new["val"] == config["val"]
    assert new["unknown_age_calibration"]["only_unknown_age"]
    before, after = load_model(run_dir).model, load_model(out).model
    moved = [n for n, a in before.state_dict().items() if not torch.equal(a, after.state_dict()[n])]
    assert set(moved) == {"fusion.unknown_age_scale", *AGE_HEAD}  # what only requests without an age use

    own = [dict(c.inputs) for c in clips]
    withheld = [with_age(x, C.UNKNOWN_AGE) for x in own]
    for name, value in predict_clips(before, own).items():  # a request naming its age: bit for bit
        np.testing.assert_array_equal(predict_clips(after, own)[name], value)
    served = predict_clips(after, withheld)
    y = np.array([c.score for c in clips])
    covered = np.mean((y >= served[C.INTERVAL.name][:, 0]) & (y <= served[C.INTERVAL.name][:, 1]))
    assert covered >= C.INTERVAL_COVERAGE or np.all(served[C.INTERVAL.name] == [C.SCORE_MIN, C.SCORE_MAX])


def test_too_few_subjects_keep_the_head_the_run_had_and_say_it_still_reads_the_age(
    tiny_run, tiny_set, tmp_path, capsys, monkeypatch
):
    """At the real minimum, the tiny split's 1 validation subject per group refits no head. calibrate printed
    "the age is not read from the clip (...; kept the head it had)" for the reference, whose kept head the
    gateway goes on reading the age with; "not read" only for a run that has no head (the tiny run)."""
    from avpenet.model import REFERENCE_DIR
    from cli.main import main

    monkeypatch.setattr(age_inference, "MIN_SUBJECTS_PER_GROUP", REAL_MIN_SUBJECTS)
    run_dir, _ = tiny_run
    for source, reads in ((REFERENCE_DIR, True), (run_dir, False)):
        out = tmp_path / source.name
        args = ["calibrate", "--checkpoint", str(source), "--data", str(tiny_set), "--out", str(out)]
        assert main([*args, "--split", str(run_dir / "split.json"), "--only-unknown-age", "--quiet"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if "age is" in x)
        before, after = load_model(source).model.state_dict(), load_model(out).model.state_dict()
        assert all(torch.equal(before[name], after[name]) for name in AGE_HEAD)  # the head as it was
        assert float(after["fusion.infers_age"]) == float(reads)
        record = json.loads((out / "config.json").read_text())["age_head"]
        assert not record["fitted"] and record["kept_head"] is reads
        if reads:
            assert line.startswith(
                "no age group: the age is read from the clip by the head the run had, kept"
            )
            assert "too few subjects: 1 neonate and 1 adult subject(s)" in line and "not read" not in line
        else:
            assert line.startswith("no age group: the age is not read from the clip (too few subjects")


def _fresh_copy(tiny_set, subjects, out):
    """A dataset holding only `subjects`' rows of tiny_set: other labels, as a set made with another seed."""
    import csv
    import shutil

    shutil.copytree(tiny_set, out)
    plan = data.read_plan(tiny_set)
    data.write_plan(out, {**plan, "seed": plan["seed"] + 1})  # what a set of another seed records
    rows = [r for r in data.read_labels(tiny_set) if r["subject_id"] in set(subjects)]
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_added_sets_pool_with_the_validation_clips(tiny_run, tiny_set, tmp_path):
    from cli.main import main

    run_dir, config = tiny_run
    split = data.read_split(run_dir / "split.json")
    fresh = _fresh_copy(tiny_set, split["train"], tmp_path / "fresh")
    out = tmp_path / "pooled"
    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(tiny_set), "--out", str(out)]
    assert main([*args, "--split", str(run_dir / "split.json"), "--add", str(fresh), "--quiet"]) == 0
    new = json.loads((out / "config.json").read_text())

    clips = data.load_clips(tiny_set, split["val"], progress=False) + data.load_clips(
        fresh, None, progress=False
    )
    assert new["interval_scale"] == pytest.approx(_hand_scale(run_dir, clips), rel=1e-4)
    (added,) = new["interval_calibration"]["added"]
    assert added["clips"] == len(clips) - new["interval_calibration"]["val_clips"] > 0
    assert added["subjects"] == len(split["train"])


def test_a_set_with_the_training_or_test_subjects_is_refused(tiny_run, tiny_set, tmp_path, capsys):
    from cli.main import main

    run_dir, _ = tiny_run
    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(tiny_set), "--out", str(tmp_path / "x")]
    assert main([*args, "--split", str(run_dir / "split.json"), "--add", str(tiny_set), "--quiet"]) == 2
    err = capsys.readouterr().err  # a user error: one line, exit 2
    assert f"avpenet calibrate: --add {tiny_set} has the labels of" in err
    assert "holds training or test subjects" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_an_out_folder_holding_a_run_is_refused_and_left_as_it_was(tiny_run, tiny_set, capsys):
    """`calibrate --out` wrote its model over a run already there (the --checkpoint itself, an exported run),
    beside that run's own split and records."""
    from cli.main import main

    run_dir, _ = tiny_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    args = ["calibrate", "--checkpoint", str(run_dir), "--data", str(tiny_set), "--out", str(run_dir)]
    assert main([*args, "--quiet"]) == 2
    assert f"--out {run_dir} already holds a run (model.pt, config.json)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
