"""`avpenet synth --faces`: the same subjects drawn on other source photos (docs/DATA.md, *Face*).

A subject's voice, labels, expressions and the proportions applied to its photo's mesh come from its own
random streams, so a clip made with other faces differs from the default one in its face only: that is what
lets the reference be judged on a face it was not trained on, subject for subject."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from avpenet.synth import cli, dataset, sources

ONE, OTHER = ("astronaut",), ("jesper_pedersen",)  # a face each: the subject's source is known


def _generate(out: Path, **kw) -> dataset.Summary:
    return dataset.generate(out, seed=21, n_subjects=3, render=0, workers=1, progress=False, **kw)


def _first_frame(mp4: Path) -> np.ndarray:
    import av

    with av.open(str(mp4)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)


def test_other_faces_change_the_face_and_nothing_else(tmp_path: Path) -> None:
    # a set made in this process first leaves its faces' states behind, without OTHER's (_worker_neutral)
    _generate(tmp_path / "before", faces=ONE)
    plan = next(
        p for p in dataset.plan(7, 2, 6, None) if p.render and not (p.visual_missing or p.audio_missing)
    )
    made = {}
    for faces in (ONE, OTHER):
        root = tmp_path / faces[0]
        for sub in ("audio", "visual", "video"):
            (root / sub).mkdir(parents=True)
        clip = copy.deepcopy(plan)
        clip.faces = faces
        made[faces] = (root, dataset.make_clip(clip, str(root)))
    (one, truth_a), (other, truth_b) = made[ONE], made[OTHER]
    wav = f"audio/{plan.clip_id}.wav"
    assert (one / wav).read_bytes() == (other / wav).read_bytes()
    assert truth_a["voiced_fraction"] == truth_b["voiced_fraction"]
    diff = np.abs(
        _first_frame(one / f"video/{plan.clip_id}.mp4") - _first_frame(other / f"video/{plan.clip_id}.mp4")
    )
    assert diff.mean() > 20, diff.mean()  # another person's photo, not a shade of the same one
    assert truth_b["face_missing_fraction"] < 0.5  # the tracker follows the new face


def test_a_set_records_its_faces_unless_they_are_the_two_of_older_sets(tmp_path: Path) -> None:
    """Sets made before faces were recorded drew from sources.TWO_FACES and record none: read so, and
    resumable with those two; any other choice, the default included, is recorded and kept on a resume."""
    _generate(tmp_path / "default")
    recorded = json.loads((tmp_path / "default" / "plan.json").read_text())
    assert recorded["faces"] == sorted(sources.DEFAULT_FACES)
    assert sources.plan_faces(recorded) == tuple(sorted(sources.DEFAULT_FACES))
    _generate(tmp_path / "two", faces=sources.TWO_FACES)
    older = json.loads((tmp_path / "two" / "plan.json").read_text())
    assert "faces" not in older and sources.plan_faces(older) == sources.TWO_FACES
    assert (tmp_path / "default" / "labels.csv").read_text() == (tmp_path / "two" / "labels.csv").read_text()
    _generate(tmp_path / "two", faces=sources.TWO_FACES, resume=True)  # an older set resumes as it was made
    with pytest.raises(ValueError, match="resume with the same options"):
        _generate(tmp_path / "two", resume=True)  # the default faces now: not the run it continues


def test_an_unknown_face_is_refused_with_the_known_ones(tmp_path: Path, capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "s"), "--subjects", "3", "--faces", "astronaut,nobody"])
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert "unknown face source(s) ['nobody']" in err
    assert all(name in err for name in sources.SOURCES)
