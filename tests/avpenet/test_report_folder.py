"""`avpenet evaluate --report DIR` writes only into a folder of its own: the report's own hint once said
`--report docs`, which replaced the hand-written docs/EVALUATION.md whole. No model is run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.full_disk import files

from avpenet import report
from cli.main import main

ROOT = Path(__file__).resolve().parents[2]
RESULT = {"checkpoint": "c", "data": "d", "test_subjects_from": "t", "params": 1, "n_clips": 1}
RESULT["n_windows"] = 1


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """The report's frame only: no plots, no sections (they need a whole evaluation)."""
    monkeypatch.setattr(report, "plots", lambda _result, _img: {})
    for section in ("_targets_section", "_accuracy_section", "_robustness_section"):
        monkeypatch.setattr(report, section, lambda *_a: [])


def _docs_copy(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "img").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "EVALUATION.md", docs / "EVALUATION.md")
    shutil.copy(ROOT / "docs" / "img" / "eval_per_age.png", docs / "img" / "eval_per_age.png")
    return docs


def test_the_hint_names_a_report_folder_and_the_report_marks_itself(tmp_path: Path):
    md = report.write_report({**RESULT, "n_subjects": 1}, tmp_path).read_text()  # an empty folder
    assert md.splitlines()[0] == report.GENERATED_MARKER
    assert "--report REPORT_DIR" in md and "--report docs" not in md


def test_a_hand_written_evaluation_md_is_refused_and_left_as_it_was(tmp_path: Path):
    docs = _docs_copy(tmp_path)
    before = files(docs)
    with pytest.raises(ValueError, match="was not written by `avpenet evaluate --report`"):
        report.write_report({**RESULT, "n_subjects": 1}, docs)
    assert files(docs) == before


def test_the_cli_refuses_the_docs_folder_before_scoring(tmp_path: Path, capsys):
    docs = _docs_copy(tmp_path)
    before = files(docs)
    out = tmp_path / "e.json"
    argv = ["evaluate", "--data", str(tmp_path / "no-such-data"), "--json", str(out), "--report", str(docs)]
    assert main(argv) == 2  # refused before the data is even read: scoring takes minutes
    err = capsys.readouterr().err
    assert f"--report {docs}: {docs / 'EVALUATION.md'} was not written by" in err
    assert files(docs) == before and not out.exists()


def test_its_own_report_and_an_older_generated_one_are_rewritten(tmp_path: Path):
    folder = tmp_path
    first = report.write_report({**RESULT, "n_subjects": 1}, folder)
    second = report.write_report({**RESULT, "n_subjects": 2}, folder)
    assert first == second and "of 2 subjects" in second.read_text()
    older = "# AVPENet evaluation\n\nCheckpoint `avpenet/reference` (1 parameters) on `S`: ...\n"
    second.write_text(older)  # what a report written before the marker opens with
    assert "of 3 subjects" in report.write_report({**RESULT, "n_subjects": 3}, folder).read_text()
