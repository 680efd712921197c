"""Fine-tuning the reference on a hospital's own folder (`avpenet train --init`), and the checks of its CSV.

The fine-tuning test runs the real recipe end to end on the tiny rendered AVPE-Synth set (MP4s through
the real face tracker): a few epochs from the committed reference with both encoders frozen, the
before/after report on the folder's own held-out subjects, `avpenet evaluate` on the result, and
`avpenet export` into a temporary model repository where only the fusion part gets a new version.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from avpenet import contract as C
from avpenet.model import REFERENCE_DIR, load_model


@pytest.fixture(scope="module")
def finetuned(tiny_set, tmp_path_factory):
    from avpenet import train

    out = tmp_path_factory.mktemp("finetune")
    args = ["--data", str(tiny_set), "--out", str(out), "--init", str(REFERENCE_DIR)]
    config = train.main([*args, "--epochs", "3", "--batch-size", "8", "--quiet"])
    return out, config


def test_finetune_freezes_the_encoders_and_reports_before_after(finetuned):
    out, config = finetuned
    ref, tuned = load_model(REFERENCE_DIR).model, load_model(out).model
    for part in ("audio_encoder", "visual_encoder"):  # weights AND batch-norm statistics unchanged
        after = tuned.part(part).state_dict()
        for name, a in ref.part(part).state_dict().items():
            assert torch.equal(a, after[name]), f"{part}.{name} moved although frozen"
    moved = [
        n for n, a in ref.fusion.state_dict().items() if not torch.equal(a, tuned.fusion.state_dict()[n])
    ]
    assert moved, "the fusion did not change"
    report = json.loads((out / "finetune.json").read_text())
    assert report["frozen"] == ["audio_encoder", "visual_encoder"] and report["lr"] == pytest.approx(3e-4)
    split = json.loads((out / "split.json").read_text())
    assert report["test_subjects"] == len(split["test"]) > 0
    assert not set(split["test"]) & set(split["train"] + split["val"])
    for side in ("before", "after"):
        assert 0 <= report[side]["mae"] <= 10 and report[side]["n"] == report["test_clips"]
    assert config["finetune"]["after"]["mae"] == pytest.approx(report["after"]["mae"])


def test_a_run_replaced_with_force_keeps_no_record_of_the_fine_tune_it_replaced(
    finetuned, tiny_set, tmp_path
):
    """`train --force` over a fine-tune's folder without --init: its finetune.json (which `avpenet calibrate`
    copies as the run's record) would describe a model no longer there."""
    import shutil

    from avpenet import train

    out = shutil.copytree(finetuned[0], tmp_path / "run")
    args = ["--data", str(tiny_set), "--out", str(out), "--epochs", "1", "--batch-size", "8", "--quiet"]
    with pytest.raises(ValueError, match="already holds a run"):
        train.main(args)
    config = train.main([*args, "--force"])
    assert "finetune" not in config and not (out / "finetune.json").exists()
    assert load_model(out).config["train"]["init"] is None


def test_a_candidate_run_leaves_the_test_subjects_unscored(tiny_set, tmp_path, capsys):
    """`--no-test-report`: a fine-tune among candidates chosen on the validation subjects neither scores nor
    prints the test subjects (`avpenet evaluate` scores the one chosen)."""
    from avpenet import train

    out = tmp_path / "candidate"
    args = ["--data", str(tiny_set), "--out", str(out), "--init", str(REFERENCE_DIR), "--no-test-report"]
    config = train.main([*args, "--epochs", "1", "--batch-size", "8", "--quiet"])
    assert "finetune" not in config and not (out / "finetune.json").exists()
    assert config["train"]["no_test_report"] and load_model(out).config["train"]["init"] == str(REFERENCE_DIR)
    printed = capsys.readouterr().out
    assert "test subjects not scored" in printed and "held-out test subjects" not in printed


def test_finetuned_run_evaluates_and_exports_only_the_fusion(finetuned, tiny_set, tmp_path):
    from cli.main import main

    out, _ = finetuned
    assert main(["evaluate", "--data", str(tiny_set), "--checkpoint", str(out)] + [
        "--json", str(tmp_path / "eval.json"), "--quiet"]) == 0  # fmt: skip
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n_clips"] > 0 and result["fusion"]["mae"] is not None
    repo = tmp_path / "model_repository"  # never the committed one
    assert main(["export", "--repo", str(repo)]) == 0  # the reference: version 1 of every part
    assert main(["export", "--checkpoint", str(out), "--repo", str(repo)]) == 0
    versions = {
        spec.name: sorted(int(p.name) for p in (repo / spec.name).iterdir() if p.name.isdigit())
        for spec in C.PARTS
    }
    assert versions["fusion"] == [1, 2]
    assert versions["audio_encoder"] == versions["visual_encoder"] == versions["audio_frontend"] == [1]


# --- bad hospital folders: rejected with line numbers before anything is decoded ---------------------------


def _folder(tmp_path, rows):
    (tmp_path / "audio").mkdir(exist_ok=True)
    (tmp_path / "audio" / "a.wav").write_bytes(b"RIFF")  # never decoded: the check comes first
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=C.LABEL_COLUMNS)
        writer.writeheader()
        for cid, subject, age, audio, score in rows:
            writer.writerow({
                "clip_id": cid, "subject_id": subject, "age_group": age, "audio": audio, "visual": "",
                "video": "", "duration_s": 3.0, "score": score, "rater_1": score, "rater_2": "",
                "rater_3": "", "level": "",
            })  # fmt: skip
    return tmp_path


BAD_ROWS = [
    ("c1", "s1", "adult", "audio/a.wav", 4),
    ("c2", "s1", "adult", "audio/missing.wav", 4),
    ("c1", "s2", "adult", "audio/a.wav", 4),
    ("c3", "s2", "elderly", "audio/a.wav", 4),
    ("c4", "s3", "adult", "audio/a.wav", 12),
    ("c5", "s3", "adult", "../a.wav", "n/a"),
    ("c6", "s3", "neonate", "audio/a.wav", 4),  # the split groups a subject by its age group: one per subject
]
EXPECTED = [
    "line 3 (clip c2): audio file 'audio/missing.wav' does not exist",
    "line 4 (clip c1): duplicate clip_id 'c1' (first at line 2)",
    "line 5 (clip c3): age_group 'elderly' is not one of neonate, adult",
    "line 6 (clip c4): score 12 is outside 0-10",
    "line 7 (clip c5): score 'n/a' is not a number",
    "line 7 (clip c5): audio path '../a.wav' points outside the dataset folder",
    "line 8 (clip c6): subject 's3' is 'neonate' here and 'adult' at line 6: one age group per subject",
]


@pytest.mark.parametrize("command", ["train", "evaluate", "features"])
def test_bad_rows_are_refused_with_line_and_reason(command, tmp_path, capsys):
    from cli.main import main

    (tmp_path / "data").mkdir()
    data = _folder(tmp_path / "data", BAD_ROWS)
    extra = {
        "train": ["--out", str(tmp_path / "run"), "--init", str(REFERENCE_DIR)],
        "evaluate": ["--json", str(tmp_path / "e.json")],
        "features": [],
    }[command]
    assert main([command, "--data", str(data), *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    for line in EXPECTED:
        assert line in err, f"{line!r} not in:\n{err}"
    assert "line 2 " not in err  # the good row is not blamed
    assert not (data / "features").exists() and not (tmp_path / "run" / "model.pt").exists()


def test_an_age_group_too_small_to_be_tested_says_so(tmp_path):
    """10 neonates and 2 adults: the adults would all train and the evaluation would hold none."""
    from avpenet import train

    rows = [(f"c{i}", f"s{i}", "neonate", "audio/a.wav", 3) for i in range(10)]
    rows += [(f"c{i}", f"s{i}", "adult", "audio/a.wav", 3) for i in range(10, 12)]
    data = _folder(tmp_path, rows)
    with pytest.raises(ValueError, match="no adult validation/test subjects.*adult 2, neonate 10"):
        train.main(["--data", str(data), "--out", str(tmp_path / "run"), "--init", str(REFERENCE_DIR)])
    assert not (tmp_path / "run" / "model.pt").exists()


def test_too_few_subjects_says_so(tmp_path):
    from avpenet import train

    rows = [(f"c{i}", f"s{i % 2}", "adult", "audio/a.wav", 3) for i in range(4)]
    data = _folder(tmp_path, rows)
    with pytest.raises(ValueError, match="too few subjects for a subject-independent split.*adult 2"):
        train.main(["--data", str(data), "--out", str(tmp_path / "run"), "--init", str(REFERENCE_DIR)])
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_subject_written_with_a_trailing_space_is_one_subject(tmp_path):
    """'S11' and 'S11 ' passed the row check (which strips) and then split as two subjects: the same patient
    in training and in test. An Excel 'CSV UTF-8' file's byte-order mark is not part of the first column."""
    from avpenet import data

    subjects = [f"S{i % 20:02d}" + (" " if i >= 20 else "") for i in range(40)]
    rows = [(f"c{i}", subject, "adult", "audio/a.wav", 3) for i, subject in enumerate(subjects)]
    folder = _folder(tmp_path, rows)
    text = (folder / "labels.csv").read_text()
    (folder / "labels.csv").write_text(text, encoding="utf-8-sig")
    split = data.make_split(data.read_labels(folder), seed=0)
    parts = [set(split[p]) for p in ("train", "val", "test")]
    assert sum(map(len, parts)) == 20 and not (parts[0] & parts[2]) and not (parts[0] & parts[1])
