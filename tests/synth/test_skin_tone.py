"""`avpenet synth --skin-tone N`: the same faces with darker skin (docs/DATA.md, *Skin tone*).

A check of the tracker and the model on darker skin colour alone: only the skin's colour may change, never
the eyes, the hair, the background, the sound or the labels, and the skin must reach the swatch asked for.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from avpenet import data
from avpenet.synth import cli, dataset, render, skin, sources

ONE = ("astronaut",)


@pytest.fixture(scope="module")
def neutral():
    return sources.neutral_face("astronaut")


def _inside(nf, polygon_ids) -> np.ndarray:
    return skin._fill(nf.image.shape[:2], [nf.points_px[list(polygon_ids), :2]])


def test_the_swatches_darken_down_the_scale_and_the_scale_is_bounded() -> None:
    lightness = [skin.swatch_lab(t)[0] for t in (5, 6, 7, 8, 9, 10)]
    assert lightness == sorted(lightness, reverse=True) and lightness[0] - lightness[-1] > 55
    for tone in (0, 11):
        with pytest.raises(ValueError, match="runs from 1 to 10"):
            skin.swatch_lab(tone)


@pytest.mark.parametrize("tone", [6, 8, 10])
def test_the_skin_reaches_the_swatch_and_nothing_else_changes(neutral, tone: int) -> None:
    out = skin.recolour(neutral.image, neutral.points_px, neutral.iod_px, tone)
    reached = skin.skin_reference(skin._lab(out), neutral.points_px)
    assert np.abs(reached - skin.swatch_lab(tone)).max() < 2.0, (reached, skin.swatch_lab(tone))
    changed = np.any(out != neutral.image, axis=-1)
    openings = np.zeros(changed.shape, bool)
    for polygon in render.eye_polygons():
        openings |= _inside(neutral, polygon)
    lab = skin._lab(neutral.image)
    whites = skin.whites_of_the_eyes(lab, neutral.points_px, skin.skin_reference(lab, neutral.points_px))
    assert 0.1 < whites[openings].mean() < 0.9  # the eyes' whites, not their lid margins or every iris
    assert not changed[whites].any()  # the whites of the eyes as photographed
    face = _inside(neutral, render.FACE_OVAL) & ~whites
    assert changed[face].mean() > 0.99
    assert not changed[:40].any() and not changed[:, :40].any()  # hair and background along the edges
    assert skin._lab(out)[face, 0].mean() < lab[face, 0].mean() - 20  # darker, not merely tinted


def _generate(out: Path, **kw) -> dataset.Summary:
    return dataset.generate(out, seed=21, n_subjects=3, render=0, workers=1, progress=False, faces=ONE, **kw)


def test_a_set_records_its_skin_tones_and_keeps_them_on_a_resume(tmp_path: Path) -> None:
    _generate(tmp_path / "photo")
    _generate(tmp_path / "dark", skin_tones=(8,))
    _generate(tmp_path / "mixed", skin_tones=(10, None, 6, 10))
    photo, dark, mixed = (
        json.loads((tmp_path / d / "plan.json").read_text()) for d in ("photo", "dark", "mixed")
    )
    assert dark["skin_tones"] == [8] and mixed["skin_tones"] == [None, 6, 10] and "skin_tones" not in photo
    assert data.same_subjects(photo, dark)  # the same subjects: cli.face_swap_report pairs their clips
    assert (tmp_path / "photo" / "labels.csv").read_text() == (tmp_path / "dark" / "labels.csv").read_text()
    _generate(tmp_path / "dark", skin_tones=(8,), resume=True)
    with pytest.raises(ValueError, match="resume with the same options"):
        _generate(tmp_path / "dark", skin_tones=(6,), resume=True)


def test_a_rendered_clip_changes_in_its_skin_only(tmp_path: Path) -> None:
    plan = next(
        p for p in dataset.plan(7, 2, 6, None) if p.render and not (p.visual_missing or p.audio_missing)
    )
    frames, made = {}, {}
    for tone in (None, 8):
        root = tmp_path / str(tone)
        dataset._init_worker(sources.neutral_states(ONE, (tone,)))  # as generate() hands it to its workers
        for sub in ("audio", "visual", "video"):
            (root / sub).mkdir(parents=True)
        clip = copy.deepcopy(plan)
        clip.faces, clip.skin_tones = ONE, (tone,)
        made[tone] = dataset.make_clip(clip, str(root))
        frames[tone] = _first_frame(root / f"video/{plan.clip_id}.mp4")
    wav = f"audio/{plan.clip_id}.wav"
    assert (tmp_path / "None" / wav).read_bytes() == (tmp_path / "8" / wav).read_bytes()
    diff = np.abs(frames[None] - frames[8]).max(axis=-1)
    assert np.percentile(diff, 25) < 6  # most of the frame (background, hair, clothes) as before
    assert np.percentile(diff, 90) > 60  # the skin much darker
    assert made[8]["face_missing_fraction"] < 0.5  # the tracker still follows the face


def test_each_subject_draws_one_of_several_tones_from_its_own_stream(tmp_path: Path) -> None:
    tones = skin.check_tones((None, 6, 10))
    drawn = [skin.subject_tone(5, i, tones) for i in range(300)]
    assert {t: drawn.count(t) for t in tones} == pytest.approx({t: 100 for t in tones}, abs=30)
    assert drawn == [skin.subject_tone(5, i, tones) for i in range(300)]  # a subject's tone is its own
    assert {skin.subject_tone(5, i, (8,)) for i in range(20)} == {8}
    # a subject drawn MST 10 in a mixed set wears what a set of MST 10 alone gives it; one drawn as
    # photographed, the photo
    for drawn_tone in (10, None):
        plan = next(
            p for p in dataset.plan(7, 9, 27, None)
            if p.render and not (p.visual_missing or p.audio_missing)
            and skin.subject_tone(7, p.subject.index, tones) == drawn_tone
        )  # fmt: skip
        frames = []
        for made_with in ((drawn_tone,), tones):
            root = tmp_path / f"{drawn_tone}-{len(made_with)}"
            for sub in ("audio", "visual", "video"):
                (root / sub).mkdir(parents=True)
            dataset._init_worker(sources.neutral_states(ONE, made_with))
            clip = copy.deepcopy(plan)
            clip.faces, clip.skin_tones = ONE, made_with
            dataset.make_clip(clip, str(root))
            frames.append(_first_frame(root / f"video/{plan.clip_id}.mp4"))
        assert np.array_equal(frames[0], frames[1]), drawn_tone


def test_a_set_names_the_tone_each_of_its_subjects_wears() -> None:
    """What `avpenet evaluate` groups a mixed set by: each subject's tone as its render drew it (the subject's
    own stream at its index), named as `--skin-tone` names it; nothing for a set made without tones."""
    recorded = {"generator": dataset.GENERATOR, "seed": 7, "n_subjects": 30, "n_clips": 90}
    subjects = dataset.make_subjects(7, 30)
    ids = [s.subject_id for s in subjects]
    named = dataset.subject_skin_tones({**recorded, "skin_tones": [None, 6, 10]}, ids)
    for subject in subjects:
        tone = skin.subject_tone(7, subject.index, (None, 6, 10))
        assert named[subject.subject_id] == (skin.AS_PHOTOGRAPHED if tone is None else str(tone))
    assert set(named.values()) == {skin.AS_PHOTOGRAPHED, "6", "10"}
    assert dataset.subject_skin_tones(recorded, ids) is None and dataset.subject_skin_tones(None, ids) is None
    with pytest.raises(ValueError, match="S0031 are not in the set's plan.json"):
        dataset.subject_skin_tones({**recorded, "skin_tones": [None, 6]}, ["S0031"])


def _first_frame(mp4: Path) -> np.ndarray:
    import av

    with av.open(str(mp4)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)


@pytest.mark.parametrize("text", ["11", "0", "dark", "", "photo,"])
def test_a_tone_off_the_scale_is_refused_by_the_command(tmp_path: Path, capsys, text: str) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    if text == "photo,":  # a trailing comma is no tone: as photographed alone
        assert parser.parse_args(["--out", str(tmp_path / "s"), "--skin-tone", text]).skin_tone == (None,)
        return
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--out", str(tmp_path / "s"), "--skin-tone", text])
    assert exit_.value.code == 2
    assert "--skin-tone" in capsys.readouterr().err
    assert parser.parse_args(["--out", str(tmp_path / "s"), "--skin-tone", "10,photo,6"]).skin_tone == (
        None,
        6,
        10,
    )
