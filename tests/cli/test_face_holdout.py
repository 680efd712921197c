"""cli.face_holdout: the split files that leave one face out, and the by-face scoring of runs against each
other (a subject's clips are resampled together, so one subject's change cannot pass for a face's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli import face_holdout

FACE = {f"S{i:02d}": ("ann", "bob", "cyd")[i % 3] for i in range(30)}
SPLIT = {
    "train": [f"S{i:02d}" for i in range(20)],
    "val": [f"S{i:02d}" for i in range(20, 25)],
    "test": [f"S{i:02d}" for i in range(25, 30)],
}


def test_the_split_without_a_face_and_its_size_matched_control() -> None:
    made = face_holdout.holdout_splits(SPLIT, FACE, "bob", seed=57)
    without, matched = made["without"], made["matched"]
    assert without["train"] and all(FACE[s] != "bob" for s in without["train"] + without["val"])
    assert set(without["train"]) == {s for s in SPLIT["train"] if FACE[s] != "bob"}
    assert without["val"] == matched["val"] == [s for s in SPLIT["val"] if FACE[s] != "bob"]
    assert without["test"] == matched["test"] == SPLIT["test"]  # both judged on the same subjects
    assert len(matched["train"]) == len(without["train"]) and set(matched["train"]) <= set(SPLIT["train"])
    assert {FACE[s] for s in matched["train"]} == {"ann", "bob", "cyd"}  # drawn from every face
    assert face_holdout.holdout_splits(SPLIT, FACE, "bob", seed=57) == made  # seeded
    assert face_holdout.holdout_splits(SPLIT, FACE, "bob", seed=58)["matched"] != matched


def test_a_face_nobody_trains_with_is_refused_with_the_faces_there_are() -> None:
    with pytest.raises(ValueError, match="no training subject wears face 'dan'.*ann, bob, cyd"):
        face_holdout.holdout_splits(SPLIT, FACE, "dan", seed=0)


def test_a_change_on_one_face_is_reported_on_that_face_only() -> None:
    subjects = np.repeat([f"S{i:02d}" for i in range(6)], 2)
    faces = np.array([FACE[s] for s in subjects])  # S00, S03: ann; S01, S04: bob; S02, S05: cyd
    base = np.linspace(0.5, 1.6, 12)
    worse = np.where(faces == "bob", base * 1.2, base)  # 20% worse on bob's subjects, nowhere else
    out = face_holdout.by_face({"A": base, "B": worse}, subjects, faces, [("B", "A")])
    assert out["bob"]["B/A %"] == 20.0 and out["bob"]["B/A ci95 %"] == [20.0, 20.0]
    assert out["ann"]["B/A %"] == out["cyd"]["B/A %"] == 0.0
    assert 0 < out["all"]["B/A %"] < 20 and out["all"]["clips"] == 12 and out["all"]["subjects"] == 6
    assert out["bob"]["A"] == round(float(base[faces == "bob"].mean()), 4)


def test_one_subjects_change_is_not_read_as_its_faces() -> None:
    subjects = np.array(["S01"] * 6 + ["S04", "S07", "S10"])  # all bob's
    faces = np.array(["bob"] * 9)
    base = np.ones(9)
    worse = np.where(subjects == "S01", 2.0, 1.0)
    row = face_holdout.by_face({"A": base, "B": worse}, subjects, faces, [("B", "A")])["bob"]
    lo, hi = row["B/A ci95 %"]
    assert row["B/A %"] == pytest.approx(66.7) and lo == 0.0 and hi > 66.7  # resamples without S01: no change


def test_split_writes_both_files_from_a_synthetic_sets_plan(tmp_path, capsys) -> None:
    from avpenet.synth import dataset

    dataset.generate(tmp_path / "set", seed=5, n_subjects=9, render=0, workers=1, progress=False)
    face = face_holdout.faces_of(tmp_path / "set")
    ids = sorted(face)
    (tmp_path / "split.json").write_text(json.dumps({"train": ids[:6], "val": ids[6:8], "test": ids[8:]}))
    held = face[ids[0]]
    argv = ["split", "--data", str(tmp_path / "set"), "--split", str(tmp_path / "split.json")]
    assert face_holdout.main([*argv, "--face", held, "--out", str(tmp_path / "out")]) == 0
    without = json.loads((tmp_path / "out" / "without.json").read_text())
    assert without["train"] == [s for s in ids[:6] if face[s] != held]
    assert json.loads((tmp_path / "out" / "matched.json").read_text())["test"] == ids[8:]
    assert "without.json: train" in capsys.readouterr().out


def test_bad_requests_exit_2_with_the_reason(tmp_path, capsys) -> None:
    (tmp_path / "labels.csv").write_text("clip_id\n")
    argv = ["score", "--data", str(tmp_path), "--run", "A=x"]
    assert face_holdout.main([*argv, "--pair", "A/B"]) == 2
    assert "--pair names run(s) not given with --run: B" in capsys.readouterr().err
    assert face_holdout.main(["split", "--data", str(tmp_path), "--face", "ann", "--out", str(tmp_path)]) == 2
    assert "has no plan.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        face_holdout.main(["score", "--data", str(tmp_path), "--run", "no-equals-sign"])


def _fake_runs(monkeypatch, preds: dict[str, list[float]]) -> list[str]:
    """score() with its model and data readers faked: run NAME predicts preds[NAME] on six subjects x two
    clips, each labelled 5; returns the list the fake decoder appends to on each call."""
    from types import SimpleNamespace

    import avpenet.data
    import avpenet.evaluate_paths
    import avpenet.model

    rows = [{"subject_id": f"S{i // 2:02d}", "clip_id": f"c{i}"} for i in range(12)]
    clips = [SimpleNamespace(clip_id=r["clip_id"], subject_id=r["subject_id"], score=5.0) for r in rows]
    decoded: list[str] = []
    monkeypatch.setattr(avpenet.data, "read_labels", lambda d: rows)
    monkeypatch.setattr(face_holdout, "faces_of", lambda d: FACE)
    monkeypatch.setattr(avpenet.model, "load_model", lambda run: SimpleNamespace(model=str(run), config={}))

    def path_clips(data_dir, rows_, path):
        assert path == "video" and rows_ == rows
        decoded.append(path)
        return clips

    def clip_scores(model, clips_, modality):
        assert clips_ is clips and modality == "both"
        return np.array(preds[model])

    monkeypatch.setattr(avpenet.evaluate_paths, "path_clips", path_clips)
    monkeypatch.setattr(avpenet.evaluate_paths, "clip_scores", clip_scores)
    return decoded


def test_score_reads_each_runs_video_path_errors_by_face(monkeypatch) -> None:
    faces = [FACE[f"S{i // 2:02d}"] for i in range(12)]
    decoded = _fake_runs(monkeypatch, {"A": [5.5] * 12, "B": [6.0 if f == "bob" else 5.5 for f in faces]})
    split = {"train": [], "val": ["S00", "S01", "S02"], "test": ["S03", "S04", "S05"]}
    out = face_holdout.score(Path("set"), {"A": Path("A"), "B": Path("B")}, [("B", "A")], split)
    assert out["bob"]["A"] == 0.5 and out["bob"]["B"] == 1.0 and out["bob"]["B/A %"] == 100.0
    assert out["ann"]["B/A %"] == 0.0 and out["all"]["clips"] == 12 and out["all"]["subjects"] == 6
    assert decoded == ["video"]  # the clips are decoded once, every run scores the same ones
