"""`avpenet synth --resume` and subject order: a stopped run continues to the same files as one whole run.

A tiny set (3 subjects, no rendering: the bookkeeping is the same for rendered clips) is made once in one
go, and again in pieces: one subject first, then a run killed after two clips, then resumed. The pieces must
end byte-identical to the whole run, with no clip made twice, the subjects in the order asked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.digests import tree_digest

from avpenet.synth import dataset, progress

SEED, SUBJECTS = 21, 3


def _generate(out: Path, **kw):
    return dataset.generate(out, seed=SEED, n_subjects=SUBJECTS, render=0, workers=1, progress=False, **kw)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    _generate(out)
    return out


REAL_WORK = dataset._work


def _counting(monkeypatch, made: list[str], fail_after: int | None = None):
    """dataset._work that logs each clip it makes (and stops the run as a kill would, when told)."""
    real = REAL_WORK

    def work(job):
        if fail_after is not None and len(made) == fail_after:
            raise KeyboardInterrupt("stopped")
        made.append(job[0].clip_id)
        return real(job)

    monkeypatch.setattr(dataset, "_work", work)


def test_pieces_and_a_killed_run_end_as_the_whole_run(whole, tmp_path, monkeypatch):
    plans = dataset.plan(SEED, SUBJECTS)
    ids = sorted({p.subject.subject_id for p in plans})
    order = [ids[2], ids[0], ids[1]]
    out = tmp_path / "pieces"
    made: list[str] = []
    _counting(monkeypatch, made)
    _generate(out, subjects=[order[0]])  # one subject alone: its labels only
    first = [p.clip_id for p in plans if p.subject.subject_id == order[0]]
    assert made == first
    assert {r.split(",")[1] for r in (out / "labels.csv").read_text().splitlines()[1:]} == {order[0]}

    _counting(monkeypatch, made, fail_after=len(first) + 2)
    with pytest.raises(KeyboardInterrupt):
        _generate(out, subjects=order, resume=True)
    assert len(made) == len(first) + 2

    _counting(monkeypatch, made)
    _generate(out, subjects=order, resume=True)
    assert sorted(made) == sorted(p.clip_id for p in plans)  # every clip made exactly once
    rank = {s: k for k, s in enumerate(order)}
    subject_of = {p.clip_id: p.subject.subject_id for p in plans}
    assert [rank[subject_of[c]] for c in made] == sorted(rank[subject_of[c]] for c in made)
    assert tree_digest(out) == tree_digest(whole)


def test_without_resume_every_clip_is_made_again(whole, tmp_path, monkeypatch):
    out = tmp_path / "again"
    _generate(out)
    made: list[str] = []
    _counting(monkeypatch, made)
    _generate(out)
    assert len(made) == len(dataset.plan(SEED, SUBJECTS))


def test_resume_with_other_options_and_unknown_subjects_are_refused(whole, tmp_path):
    out = tmp_path / "other"
    _generate(out, subjects=["S0001"])
    with pytest.raises(ValueError, match="resume with the same options"):
        dataset.generate(
            out, seed=SEED + 1, n_subjects=SUBJECTS, render=0, workers=1, progress=False, resume=True
        )
    with pytest.raises(ValueError, match="S0999"):
        _generate(out, subjects=["S0999"])


def test_subject_order_takes_the_parts_in_the_order_given(tmp_path):
    split = {"train": ["S0003", "S0001"], "val": ["S0002"], "test": ["S0004"]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    assert progress.subject_order(path, ["test", "val", "train"]) == ["S0004", "S0002", "S0003", "S0001"]
    assert progress.subject_order(path, ["val"]) == ["S0002"]
    with pytest.raises(ValueError, match="no part tset"):
        progress.subject_order(path, ["tset"])


def test_cli_parts_follow_the_split_avpenet_train_makes(whole, tmp_path, capsys):
    import argparse

    from avpenet import data
    from avpenet.synth import cli as synth_cli
    from cli.main import main

    out = tmp_path / "cli"
    args = argparse.Namespace(seed=SEED, subjects=SUBJECTS, clips=None, out=out)
    made = data.read_split(synth_cli._default_split(args))
    assert made == data.make_split(data.read_labels(whole), SEED)  # what `avpenet train --seed` would use

    base = f"synth --out {out} --seed {SEED} --subjects {SUBJECTS} --render-video 0 --workers 1 --quiet"
    base = [*base.split(), "--resume"]
    assert main([*base, "--parts", "tset"]) == 2
    assert "no part tset" in capsys.readouterr().err
    assert main([*base, "--parts", "test,val,train"]) == 0
    assert (out / "labels.csv").read_bytes() == (whole / "labels.csv").read_bytes()
    assert (out / "truth.csv").read_bytes() == (whole / "truth.csv").read_bytes()
