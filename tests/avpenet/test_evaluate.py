"""Evaluation on a tiny real set: the stable JSON keys, metric maths, and the Markdown report with plots."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
from support.rendered_set import render_one_clip

from avpenet import contract as C
from avpenet import data, evaluate, machine
from avpenet.features import tracked
from avpenet.model import REFERENCE_DIR
from avpenet.predict import icc_a1, level_index, regression_metrics

METRICS = {"mae", "rmse", "pearson_r", "icc", "accuracy_3class", "macro_f1"}


def test_metrics_maths():
    true = np.array([0.0, 2.0, 4.0, 7.0, 9.0])
    m = regression_metrics(true + 1.5, true)
    assert m["mae"] == pytest.approx(1.5) and m["rmse"] == pytest.approx(1.5)
    assert m["pearson_r"] == pytest.approx(1.0)
    assert m["icc"] < 1.0  # absolute agreement punishes the constant bias that Pearson ignores
    assert icc_a1(true, true) == pytest.approx(1.0)
    assert list(level_index([0.0, 3.0, 3.01, 6.0, 6.5, 10.0])) == [0, 0, 1, 1, 2, 2]
    assert m["accuracy_3class"] == pytest.approx(0.8)  # only 2 -> 3.5 crosses a level bound


@pytest.fixture(scope="module")
def evaluated(tiny_set, tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    run_dir, _ = tiny_run
    args = argparse.Namespace(
        data=tiny_set, checkpoint=run_dir, json=out / "eval.json", report=out / "report", notes=None,
        seed=0, batch_size=32, quiet=True, split=None,
    )  # fmt: skip
    assert evaluate.run(args) == 0
    return json.loads((out / "eval.json").read_text()), out


def test_only_test_subjects_of_the_training_data_are_scored(evaluated, tiny_set, tiny_run):
    result, _ = evaluated
    split = json.loads((tiny_run[0] / "split.json").read_text())
    rows = data.read_labels(tiny_set)
    assert 0 < result["n_clips"] == sum(r["subject_id"] in split["test"] for r in rows) < len(rows)
    assert result["test_subjects_from"] == "the checkpoint's split.json (test): the data it was trained on"


def test_the_figures_name_the_machine_that_scored(evaluated):
    """The same render scored on another CPU reads a little differently: the JSON and the report say where."""
    result, out = evaluated
    assert result["machines"]["evaluated_on"] == machine.describe(machine.SCORING_PACKAGES)
    assert result["machines"]["tracked_on"] == {}  # the tiny set renders no video
    assert result["machines"]["evaluated_on"] in (out / "report" / "EVALUATION.md").read_text()


def test_the_figures_name_the_machine_that_tracked_each_video(tmp_path):
    """...and which machines rendered and tracked the videos it scored: the one its tracking stamp names, not
    the one reading it (a render tracked elsewhere is reused as it is, avpenet/features/tracked.py)."""
    row = render_one_clip(tmp_path)
    stamp = tracked.stamp_path(tmp_path / row["visual"])
    other = "Another CPU [avx2 fma avx512f]; mediapipe 1.2.3"
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), tracked.MACHINE_KEY: other}))
    args = argparse.Namespace(
        data=tmp_path, checkpoint=REFERENCE_DIR, json=tmp_path / "eval.json", report=None, notes=None,
        seed=0, batch_size=32, quiet=True, split=None,
    )  # fmt: skip
    assert evaluate.run(args) == 0
    assert json.loads(args.json.read_text())["machines"]["tracked_on"] == {other: 1}


def test_part_val_judges_the_validation_subjects_of_the_same_split(tiny_set, tiny_run, tmp_path):
    """Candidates are chosen on validation subjects: `--part val` takes them from the split the test figures
    come from, instead of a hand-made copy of split.json with its parts swapped."""
    rows = data.read_labels(tiny_set)
    split = json.loads((tiny_run[0] / "split.json").read_text())
    args = argparse.Namespace(data=tiny_set, checkpoint=tiny_run[0], split=None, part="val")
    subjects, source = evaluate.choose_subjects(args, tiny_run[1], rows)
    assert subjects == split["val"] and not set(subjects) & set(split["test"])
    assert source == "the checkpoint's split.json (val): the data it was trained on"
    unseen = argparse.Namespace(data=tmp_path, checkpoint=tmp_path, split=None, part="val")
    with pytest.raises(ValueError, match="--part val: no split says which subjects"):
        evaluate.choose_subjects(unseen, {}, rows)  # unseen data has no validation part to judge


def test_unseen_data_is_all_test_data(tiny_set, tmp_path):
    rows = data.read_labels(tiny_set)
    # a folder without split.json, and a "checkpoint" without one: nothing says which subjects were seen
    args = argparse.Namespace(data=tmp_path, checkpoint=tmp_path, split=None)
    subjects, source = evaluate.choose_subjects(args, {}, rows)
    assert subjects == sorted({r["subject_id"] for r in rows}) and "no split" in source


def test_json_has_the_stable_keys(evaluated):
    result, _ = evaluated
    assert result["params"] > 0
    for key in ("fusion", "audio_only", "visual_only", "by_age"):
        assert key in result
    for block in (result["fusion"], result["audio_only"], result["visual_only"], *result["by_age"].values()):
        assert set(block) >= METRICS
        assert block["mae"] >= 0
    assert set(result["by_age"]) == set(C.LABELLED_AGE_GROUPS)
    assert "by_skin_tone" not in result  # a set made without --skin-tone
    assert {"clean", "snr_20db", "snr_10db", "snr_5db", "snr_0db", "lower_face_occluded", "audio_missing",
            "face_missing"} <= set(result["robustness"])  # fmt: skip
    assert all("mae" in v for v in result["robustness"].values())
    assert 0.0 <= result["interval_coverage_90"] <= 1.0
    assert result["label_noise_floor_mae"] > 0  # truth.csv is present in synthetic data
    assert all(block["n_subjects"] >= 1 for block in result["by_age"].values())
    # the tiny run's test part is a few subjects: too few to judge any target (test_small_sets_...)
    assert all(
        t["met"] is None and "a verdict needs at least" in t["not_judged"] for t in result["targets"].values()
    )


def test_a_set_rendered_with_skin_tones_is_judged_per_tone_as_well(tiny_set, tiny_run, tmp_path):
    """A set made with `avpenet synth --skin-tone photo,6,10` is also judged per tone its subjects wear (its
    plan.json says which), so darker skin scored worse shows in the JSON and the report."""
    from avpenet.synth.dataset import subject_skin_tones

    toned = tmp_path / "toned"
    shutil.copytree(tiny_set, toned)
    plan = {**data.read_plan(tiny_set), "skin_tones": [None, 6, 10]}
    data.write_plan(toned, plan)
    rows = data.read_labels(toned)
    subjects = sorted({r["subject_id"] for r in rows})  # every subject judged: more than one tone among them
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": [], "test": subjects}))
    args = argparse.Namespace(
        data=toned, checkpoint=tiny_run[0], json=tmp_path / "eval.json", report=tmp_path / "report",
        notes=None, seed=0, batch_size=32, quiet=True, split=tmp_path / "split.json",
    )  # fmt: skip
    assert evaluate.run(args) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    worn = subject_skin_tones(plan, subjects)
    clips_per_tone = {t: sum(worn[r["subject_id"]] == t for r in rows) for t in sorted(set(worn.values()))}
    assert len(clips_per_tone) > 1
    assert {t: b["n"] for t, b in result["by_skin_tone"].items()} == clips_per_tone
    assert sum(clips_per_tone.values()) == result["n_clips"]
    md = (tmp_path / "report" / "EVALUATION.md").read_text()
    for tone in clips_per_tone:
        name = "as photographed" if tone == "photo" else f"MST {tone}"
        assert f"| fusion, skin {name} |" in md


def test_noise_changes_the_prediction(evaluated):
    result, _ = evaluated
    assert result["robustness"]["snr_0db"]["mae"] != result["robustness"]["clean"]["mae"]


def test_report_has_every_plot(evaluated):
    _, out = evaluated
    md = (out / "report" / "EVALUATION.md").read_text()
    for name in ("pred_vs_true", "bland_altman", "confusion", "per_age", "robustness"):
        png = out / "report" / "img" / f"eval_{name}.png"
        assert png.exists() and png.stat().st_size > 1000
        assert f"img/eval_{name}.png" in md


def test_report_says_what_the_interval_was_fitted_on():
    from avpenet.report import _fitted_on

    assert _fitted_on({"scale": 2.0}) == "= 2.000 fitted on the validation subjects' clips"
    calib = {"val_clips": 301, "val_subjects": ["S1", "S2"], "added": [{"clips": 326, "subjects": 43}]}
    said = _fitted_on({"scale": 1.795, "calibration": calib})
    assert said == (
        "= 1.795 fitted by `avpenet calibrate` on 301 clips of 2 validation subjects and 326 clips of 43 "
        "fresh subjects (a set of another seed)"
    )


def _fixed_result(fusion_mae: float, paths: dict | None = None, subjects: tuple[int, int] = (22, 21)) -> dict:
    """An evaluation's figures; `subjects`: test subjects (neonates, adults), the reference's by default."""
    block = {"mae": fusion_mae, "pearson_r": 0.9, "accuracy_3class": 0.85}
    r = {
        "fusion": block, "audio_only": {"mae": 1.5}, "visual_only": {"mae": 1.4},
        "by_age": {"neonate": {"mae": 0.9, "n_subjects": subjects[0]},
                   "adult": {"mae": 0.9, "n_subjects": subjects[1]}},
        "robustness": {"snr_0db": {"mae_change": 0.1}, "lower_face_occluded": {"mae_change": 0.1}},
        "interval_coverage_90": 0.9,
    }  # fmt: skip
    return {**r, "paths": paths} if paths else r


def test_the_ceiling_fails_above_095_even_when_the_rest_passes():
    from avpenet.evaluate import judge_targets

    assert judge_targets(_fixed_result(0.93))["fusion_mae_ceiling"]["met"] is True
    assert judge_targets(_fixed_result(0.96))["fusion_mae_ceiling"]["met"] is False


def test_video_path_is_judged_against_the_landmarks_path_only_when_paths_ran():
    from avpenet.evaluate import judge_targets

    assert "video_vs_landmarks_mae" not in judge_targets(_fixed_result(0.9))
    close = judge_targets(_fixed_result(0.9, {"video": {"mae": 1.04}, "audio_landmarks": {"mae": 1.0}}))
    far = judge_targets(_fixed_result(0.9, {"video": {"mae": 1.10}, "audio_landmarks": {"mae": 1.0}}))
    assert close["video_vs_landmarks_mae"]["met"] is True
    assert far["video_vs_landmarks_mae"]["met"] is False
    assert far["video_vs_landmarks_mae"]["measured"] == pytest.approx(0.10)


def test_macro_f1_counts_only_the_levels_present():
    """A level neither the labels nor the predictions hold is not an F1 of 0: a perfect prediction of one
    low clip scored 0.33 (what a subset such as one age group can hold)."""
    assert regression_metrics([1.0], [1.0])["macro_f1"] == 1.0
    assert regression_metrics([1.0, 8.0], [1.0, 8.0])["macro_f1"] == 1.0


def test_a_nan_prediction_is_no_level():
    """It counted as "high" (searchsorted), right for every high-pain clip."""
    assert level_index(np.array([np.nan, 1.0, 4.0, 9.0])).tolist() == [-1, 0, 1, 2]
    assert regression_metrics([np.nan, 1.0], [9.0, 1.0])["accuracy_3class"] == 0.5


def test_clips_sent_without_their_age_report_how_often_the_age_read_from_them_is_right(
    tiny_set, tiny_run, tmp_path, monkeypatch
):
    import shutil

    from avpenet import age_inference, data
    from avpenet.model import load_model, save_model

    # the tiny run with a head fitted on its validation clips, though 1 subject per group is too few for one
    run_dir = shutil.copytree(tiny_run[0], tmp_path / "run")
    monkeypatch.setattr(age_inference, "MIN_SUBJECTS_PER_GROUP", 1)
    loaded = load_model(run_dir)
    model, config = loaded.model, loaded.config
    clips = data.load_clips(tiny_set, data.read_split(run_dir / "split.json")["val"], progress=False)
    fitted = age_inference.fit_age_head(model, [c.inputs for c in clips], [c.subject_id for c in clips])
    assert fitted["fitted"]
    save_model(model, run_dir, extra={k: v for k, v in config.items() if k not in ("model", "params")})
    args = argparse.Namespace(
        data=tiny_set, checkpoint=run_dir, seed=0, batch_size=32, quiet=True, split=None, send_age="unknown"
    )
    result = evaluate.evaluate(args)
    inferred = result["age_inferred"]
    assert set(inferred) == {"as_sent", "audio_only", "face_only"}  # what a request may carry
    counts = {"clips_read", "questioned_named_right", "questioned_named_wrong"}
    assert all(set(path) == {"window_accuracy", "clip_accuracy", *counts} for path in inferred.values())
    shares = [path[k] for path in inferred.values() for k in ("window_accuracy", "clip_accuracy")]
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert all(0 < path["clips_read"] <= result["n_clips"] for path in inferred.values())
    assert all(path[k] <= path["clips_read"] for path in inferred.values() for k in counts)
    assert "age_inferred" not in evaluate.evaluate(argparse.Namespace(**{**vars(args), "send_age": None}))


def test_small_sets_get_no_target_verdicts():
    """4 subjects "met" the fusion MAE target the 43 held-out subjects of the default set miss: below
    MIN_TEST_SUBJECTS every verdict is withheld (met null, and why), and the printed line says so."""
    from avpenet.targets import MIN_TEST_SUBJECTS, judge_targets, unjudged_line

    small = judge_targets(_fixed_result(0.5, subjects=(2, 2)))
    assert all(t["met"] is None for t in small.values())
    assert (
        small["fusion_mae"]["not_judged"] == f"4 test subjects; a verdict needs at least {MIN_TEST_SUBJECTS}"
    )
    assert small["fusion_mae"]["measured"] == 0.5  # the figure is still reported
    assert unjudged_line(small).startswith("the set is too small to judge the targets (4 test subjects;")
    assert unjudged_line(judge_targets(_fixed_result(0.5))) is None


def test_an_age_group_of_few_subjects_gets_no_verdict_of_its_own():
    from avpenet.targets import judge_targets, unjudged_line

    judged = judge_targets(_fixed_result(0.5, subjects=(20, 6)))
    assert judged["adult_mae"]["met"] is None and "6 adult test subjects" in judged["adult_mae"]["not_judged"]
    assert judged["neonate_mae"]["met"] is True and judged["fusion_mae"]["met"] is True
    assert unjudged_line(judged).startswith("targets not judged: adult MAE (6 adult test subjects;")


def test_validation_figures_get_no_verdict():
    """`--part val` scores the subjects candidates are chosen on: a "met" there would read as the test
    subjects' verdict, so every target is left unjudged, with the reason, and the figures stay."""
    from avpenet.targets import VALIDATION_PART, judge_targets, unjudged_line

    judged = judge_targets({**_fixed_result(0.5), "part": "val"})
    assert {t["not_judged"] for t in judged.values()} == {VALIDATION_PART}
    assert all(t["met"] is None for t in judged.values()) and judged["fusion_mae"]["measured"] == 0.5
    assert unjudged_line(judged) == f"no target is judged on {VALIDATION_PART}"
    assert all(t["met"] is True for t in judge_targets({**_fixed_result(0.5), "part": "test"}).values())


def test_a_figure_not_measured_is_no_verdict_rather_than_a_miss():
    """A set without adults reported adult MAE "measured: None, met: False", which reads as a failure."""
    from avpenet.targets import judge_targets

    r = _fixed_result(0.5, subjects=(20, 0))
    r["by_age"]["adult"]["mae"] = float("nan")
    adult = judge_targets(r)["adult_mae"]
    assert adult["met"] is None and adult["not_judged"] == "not measured: no adult clips"


def test_the_reference_verdicts_are_unchanged():
    """avpenet/reference/metrics.json (43 test subjects: 22 neonates, 21 adults, the 10% of each group the
    split takes) judged again gives the verdicts it carries."""
    from avpenet.model import REFERENCE_DIR
    from avpenet.targets import judge_targets

    ref = json.loads((REFERENCE_DIR / "metrics.json").read_text())
    assert ref["n_subjects"] == 43
    for age, n in (("neonate", 22), ("adult", 21)):
        ref["by_age"][age].setdefault("n_subjects", n)
    again = judge_targets(ref)
    assert {k: t["met"] for k, t in again.items()} == {k: t["met"] for k, t in ref["targets"].items()}
    assert all("not_judged" not in t for t in again.values())


def test_the_report_says_why_a_target_has_no_verdict():
    from avpenet.report import _targets_section
    from avpenet.targets import judge_targets

    lines = _targets_section({"targets": judge_targets(_fixed_result(0.5, subjects=(2, 2)))})
    assert "| fusion MAE | <= 0.89 | 0.500 | — |" in lines  # the figure, and no verdict
    assert "Not judged (—): every target: 4 test subjects; a verdict needs at least 10." in lines
