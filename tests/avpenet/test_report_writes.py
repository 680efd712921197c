"""What `avpenet evaluate --json/--report` and `avpenet train --init` write is replaced whole: a disk that
fills up mid-write leaves the previous metrics.json (which `avpenet export` reads), EVALUATION.md, figure or
finetune.json as it was, not half of a new one. No model is run: the figures are given."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.full_disk import files, fill_disk_midway

from avpenet import data, finetune, report, report_plots
from avpenet import evaluate as evaluate_cli

OLD_JSON = b'{"fusion": {"mae": 0.9}}\n'


def test_evaluate_json_leaves_the_previous_metrics_whole_when_the_disk_fills(tmp_path: Path, monkeypatch):
    out = tmp_path / "run" / "metrics.json"
    out.parent.mkdir()
    out.write_bytes(OLD_JSON)
    block = {"mae": 1.0, "pearson_r": 0.5, "accuracy_3class": 0.7}
    result = {"fusion": block, "audio_only": block, "visual_only": block, "n_clips": 3}
    monkeypatch.setattr(evaluate_cli, "evaluate", lambda _args: {**result, "interval_coverage_90": 0.9})
    fill_disk_midway(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="No space left"):
        evaluate_cli.run(argparse.Namespace(json=out, notes=None, report=None))
    assert files(out.parent) == {"metrics.json": OLD_JSON}


def test_the_report_leaves_the_previous_evaluation_md_whole_when_the_disk_fills(tmp_path: Path, monkeypatch):
    last = f"{report.GENERATED_MARKER}\n\n# AVPENet evaluation\n\nthe last one\n"  # a report it wrote
    (tmp_path / "EVALUATION.md").write_text(last)
    before = files(tmp_path)
    monkeypatch.setattr(report, "plots", lambda _result, _img: {})
    for section in ("_targets_section", "_accuracy_section", "_robustness_section"):
        monkeypatch.setattr(report, section, lambda *_a: ["a section"] * 100)
    result = dict.fromkeys(("checkpoint", "data", "test_subjects_from"), "x")
    result.update(params=1, n_clips=1, n_windows=1, n_subjects=1)
    fill_disk_midway(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="No space left"):
        report.write_report(result, tmp_path)
    assert files(tmp_path) == before


def test_a_figure_leaves_the_previous_png_whole_when_the_disk_fills(tmp_path: Path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = tmp_path / "eval_training.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report_plots._save(fig, png)
    before = files(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fill_disk_midway(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="No space left"):
        report_plots._save(fig, png)
    assert files(tmp_path) == before


def test_finetune_json_leaves_the_previous_report_whole_when_the_disk_fills(tmp_path: Path, monkeypatch):
    import avpenet.model

    (tmp_path / finetune.REPORT_FILE).write_bytes(OLD_JSON)
    monkeypatch.setattr(data, "load_clips", lambda *_a, **_k: [])
    monkeypatch.setattr(avpenet.model, "load_model", lambda _run: SimpleNamespace(model=None))
    monkeypatch.setattr(finetune, "_metrics", lambda *_a: {"mae": 1.0})
    args = argparse.Namespace(data=tmp_path, quiet=True, init=tmp_path, modality="both", freeze="none")
    args.lr = None
    fill_disk_midway(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="No space left"):
        finetune.before_after(args, SimpleNamespace(eval=lambda: None), {"test": []}, tmp_path)
    assert files(tmp_path) == {finetune.REPORT_FILE: OLD_JSON}
