"""cli.face_swap_report: the MAE change between two renders of the same clips, with a subject-bootstrap
interval (a subject's clips are resampled together, so one subject's change cannot pass for everyone's)."""

from __future__ import annotations

import numpy as np

from cli import face_swap_report


def test_a_uniform_change_is_reported_exactly() -> None:
    err = np.linspace(0.0, 2.0, 12)
    r = face_swap_report.paired(err, err + 0.1, np.repeat(["S1", "S2", "S3", "S4"], 3))
    assert r["n_clips"] == 12 and r["n_subjects"] == 4
    assert np.isclose(r["difference"], 0.1) and np.allclose(r["difference_ci95"], [0.1, 0.1])
    assert np.isclose(r["bias_other"] - r["bias_default"], 0.1)
    low = face_swap_report.paired(err, -err, np.repeat(["S1", "S2", "S3", "S4"], 3))  # scores as far below
    assert np.isclose(low["difference"], 0.0) and np.isclose(low["bias_other"], -1.0)


def test_one_subjects_change_is_not_read_as_everyones() -> None:
    subjects = np.array(["S1"] * 6 + ["S2", "S3", "S4", "S5"])
    err = np.zeros(10)
    worse = np.where(subjects == "S1", 1.0, 0.0)  # six of ten clips, all one subject's
    r = face_swap_report.paired(err, worse, subjects)
    assert np.isclose(r["difference"], 0.6)
    lo, hi = r["difference_ci95"]
    assert lo == 0.0 and hi > 0.6  # resamples without S1 change nothing; resampling clips would not reach 0
    assert face_swap_report.lines({"all": r, "face_in_default": {}, "age_group": {}})[0].startswith(
        "all: 10 clips of 5 subjects, MAE 0.000 -> 0.600 (+0.600"
    ) and face_swap_report.lines({"all": r, "face_in_default": {}, "age_group": {}})[0].endswith(
        "bias +0.00 -> +0.60"
    )


def test_sets_of_two_plans_are_refused_before_anything_is_scored(tmp_path, capsys) -> None:
    from avpenet.synth import dataset

    for name, seed in (("a", 21), ("b", 22)):  # the same subject and clip ids, other clips
        dataset.generate(tmp_path / name, seed=seed, n_subjects=3, render=0, workers=1, progress=False)
    assert face_swap_report.main(["--default", str(tmp_path / "a"), "--other", str(tmp_path / "b")]) == 2
    assert "are not renders of one plan" in capsys.readouterr().err


def test_the_share_of_frames_with_a_face_is_reported_for_each_set() -> None:
    err = np.zeros(4)
    subjects = np.array(["S1", "S1", "S2", "S2"])
    r = face_swap_report.paired(err, err, subjects, faces=(np.array([1.0, 1.0, 0.5, 0.5]), np.full(4, 0.25)))
    assert np.isclose(r["face_frames_default"], 0.75) and np.isclose(r["face_frames_other"], 0.25)
    assert face_swap_report.lines({"all": r, "face_in_default": {}, "age_group": {}})[0].endswith(
        "usable face in 75.0% -> 25.0% of frames"
    )
    assert "face_frames_default" not in face_swap_report.paired(err, err, subjects)


def test_a_set_with_tones_drawn_per_subject_is_also_grouped_by_tone() -> None:
    """Against a mixed set (`synth --skin-tone photo,6,10`), each clip is also grouped by the tone its subject
    wears there (as the render drew it); a set of one tone, or none, adds no such grouping."""
    from avpenet.synth import dataset, skin

    plan = {"generator": dataset.GENERATOR, "seed": 7, "n_subjects": 30, "n_clips": 90}
    subjects = np.array([s.subject_id for s in dataset.make_subjects(7, 30) for _ in range(2)])
    age = np.array(["adult"] * len(subjects))
    groups = face_swap_report.groupings(plan, {**plan, "skin_tones": [None, 6, 10]}, subjects, age)
    tones = (None, 6, 10)
    want = [skin.subject_tone(7, int(s[1:]) - 1, tones) for s in subjects]
    assert list(groups["skin_tone_in_other"]) == [skin.AS_PHOTOGRAPHED if t is None else str(t) for t in want]
    assert set(groups) == {"face_in_default", "age_group", "skin_tone_in_other"}
    assert face_swap_report.group_order(groups["skin_tone_in_other"]) == [skin.AS_PHOTOGRAPHED, "6", "10"]
    for other in ({**plan, "skin_tones": [10]}, plan, None):
        assert set(face_swap_report.groupings(plan, other, subjects, age)) == {"face_in_default", "age_group"}
