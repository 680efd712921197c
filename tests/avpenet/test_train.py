"""Training: subject-independent split, augmentation, losses, and a tiny real run that lowers its loss."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avpenet import contract as C
from avpenet import data, train
from avpenet.model import AVPENet, example_inputs, load_model


def _rows(n_per_age: int) -> list[dict[str, str]]:
    return [
        {"subject_id": f"{age[0]}{i:03d}", "age_group": age, "clip_id": f"{age}{i}-{k}"}
        for age in C.LABELLED_AGE_GROUPS
        for i in range(n_per_age)
        for k in range(3)
    ]


class TestSplit:
    def test_subject_independent_stratified_and_seeded(self):
        rows = _rows(20)
        split = data.make_split(rows, seed=3)
        parts = [set(split[p]) for p in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == {r["subject_id"] for r in rows}
        for part, n in (("train", 16), ("val", 2), ("test", 2)):
            assert sum(s.startswith("n") for s in split[part]) == n
            assert sum(s.startswith("a") for s in split[part]) == n
        assert data.make_split(rows, seed=3) == split
        assert data.make_split(rows, seed=4) != split

    def test_read_split_rejects_leaks(self, tmp_path):
        path = tmp_path / "split.json"
        path.write_text(json.dumps({"train": ["a", "b"], "val": [], "test": ["b"]}))
        with pytest.raises(ValueError, match="both train and test"):
            data.read_split(path)
        path.write_text(json.dumps({"train": ["a"], "val": ["c"], "test": ["b", "c"]}))
        with pytest.raises(ValueError, match="both val and test"):  # early stopping on a test subject
            data.read_split(path)


class TestAugmentation:
    def _window(self, n: int = 1) -> dict[str, np.ndarray]:
        """One clip of n windows (the Augmenter works on a clip's windows)."""
        return {
            k: v.numpy().copy()
            for k, v in zip(train.INPUT_NAMES, example_inputs(C.MODEL_INPUTS, n), strict=True)
        }

    def test_single_modality_restriction(self):
        x = train.restrict(self._window(), "audio")
        assert x[C.FRAME_MASK.name].max() == 0 and x[C.AUDIO_PRESENT.name][0] == 1
        x = train.restrict(self._window(), "visual")
        assert x[C.AUDIO_PRESENT.name][0] == 0 and not x[C.WAVEFORM.name].any()

    def test_noise_changes_audio_and_keeps_the_level(self):
        from avpenet.features.audio import normalise_window, rms_dbfs

        aug = train.Augmenter(np.random.default_rng(0), "both")
        aug.p_noise, aug.p_drop_audio, aug.p_drop_face, aug.p_occlude = 1.0, 0.0, 0.0, 0.0
        x = self._window(3)
        x[C.WAVEFORM.name] = np.stack([normalise_window(w) for w in x[C.WAVEFORM.name]])
        before = x[C.WAVEFORM.name].copy()
        aug(x, None)
        for w in range(3):  # every window of the clip gets noise, and keeps the feature code's level
            assert not np.allclose(before[w], x[C.WAVEFORM.name][w])
            assert abs(rms_dbfs(x[C.WAVEFORM.name][w]) - C.AUDIO_TARGET_RMS_DBFS) < 0.5

    def test_modality_dropout_rate(self):
        aug = train.Augmenter(np.random.default_rng(1), "both")
        aug.p_noise = aug.p_occlude = 0.0
        dropped = 0
        for _ in range(400):
            x = self._window(2)
            aug(x, None)
            no_audio, no_face = x[C.AUDIO_PRESENT.name].max() == 0, x[C.FRAME_MASK.name].max() == 0
            assert no_audio == (x[C.AUDIO_PRESENT.name].min() == 0)  # the whole clip, not one window
            dropped += int(no_audio or no_face)
        assert 0.2 < dropped / 400 < 0.4  # 0.15 + 0.15


def test_clip_outputs_aggregate_windows_as_served():
    from avpenet.aggregate import aggregate_windows

    model = AVPENet().eval()
    inputs = dict(zip([t.name for t in C.MODEL_INPUTS], example_inputs(C.MODEL_INPUTS, 5), strict=True))
    inputs[C.AUDIO_PRESENT.name][3] = 0  # window 3 has neither modality: left out of its clip, as served
    inputs[C.FRAME_MASK.name][3] = 0
    with torch.no_grad():
        out = model.predict(*inputs.values())
        assert float(out[C.MODALITY_WEIGHTS.name][3].sum()) == 0.0
        owner = torch.tensor([0, 0, 1, 1, 1])
        clip = train.clip_outputs(out, owner, 2)
    for j, rows in enumerate(([0, 1], [2, 3, 4])):
        served = aggregate_windows(
            out[C.SCORE.name][rows].numpy(), out[C.LOG_VARIANCE.name][rows].numpy(),
            out[C.CLASS_PROBS.name][rows].numpy(), out[C.MODALITY_WEIGHTS.name][rows].numpy(),
        )  # fmt: skip
        assert float(clip[C.SCORE.name][j]) == pytest.approx(served[C.SCORE.name], abs=1e-5)
        assert float(clip[C.LOG_VARIANCE.name][j]) == pytest.approx(served[C.LOG_VARIANCE.name], abs=1e-4)
        probs = torch.exp(clip["class_logits"][j]).numpy()
        np.testing.assert_allclose(probs, served[C.CLASS_PROBS.name], atol=1e-5)


def test_losses_are_finite_and_penalise_error():
    model = AVPENet().eval()
    with torch.no_grad():
        out = model.predict(*example_inputs(C.MODEL_INPUTS, 4))
        near = train.loss_terms(out, out[C.SCORE.name].clone(), torch.zeros(4, dtype=torch.int64))
        far = train.loss_terms(out, out[C.SCORE.name] + 5.0, torch.zeros(4, dtype=torch.int64))
    assert all(torch.isfinite(v) for v in near.values())
    assert far["l1"] > near["l1"] and far["beta_nll"] > near["beta_nll"]


def test_modality_losses_score_each_clip_as_its_masked_upload_is_scored():
    """--modality-loss: each clip with both modalities is also judged on the score its sound alone and its
    face alone get as served (the masked inputs through the whole model); a clip without a face is not."""
    model = AVPENet().eval()
    names = [t.name for t in C.MODEL_INPUTS]
    inputs = dict(zip(names, example_inputs(C.MODEL_INPUTS, 5), strict=True))
    inputs[C.FRAME_MASK.name][3:] = 0  # clip 1 (windows 3 and 4) has no face
    owner, y, level = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([[7.0], [2.0]]), torch.tensor([2, 0])

    def served(masked: dict[str, torch.Tensor]) -> float:
        out = train.clip_outputs(model.predict(*masked.values()), owner, 2)
        alone = train.loss_terms({k: v[:1] for k, v in out.items()}, y[:1], level[:1])
        return float(sum(train.LOSS_WEIGHTS[k] * v for k, v in alone.items()))

    with torch.no_grad():
        plain, fused, _ = train.batch_loss(model, list(inputs.values()), owner, y, level, 0.0)
        loss, terms, clips = train.batch_loss(model, list(inputs.values()), owner, y, level, 0.5)
        no_face = {**inputs, C.FRAME_MASK.name: torch.zeros_like(inputs[C.FRAME_MASK.name])}
        no_face[C.VISUAL_FEATURES.name] = torch.zeros_like(inputs[C.VISUAL_FEATURES.name])
        no_audio = {**inputs, C.AUDIO_PRESENT.name: torch.zeros_like(inputs[C.AUDIO_PRESENT.name])}
        no_audio[C.WAVEFORM.name] = torch.zeros_like(inputs[C.WAVEFORM.name])
        audio_alone, face_alone = served(no_face), served(no_audio)
    assert set(fused) == {"l1", "beta_nll", "ce"} and set(terms) == {*fused, *train.ALONE}
    # what the epoch's history averages each term over: the clips it is the mean of
    assert clips == {"l1": 2, "beta_nll": 2, "ce": 2, "audio_alone": 1, "face_alone": 1}
    assert float(terms["audio_alone"]) == pytest.approx(audio_alone, rel=1e-5)
    assert float(terms["face_alone"]) == pytest.approx(face_alone, rel=1e-5)
    assert audio_alone != pytest.approx(face_alone, rel=1e-3)
    assert float(loss) == pytest.approx(float(plain) + 0.5 * (audio_alone + face_alone), rel=1e-5)


def _face_clip(subject: str, score: float, col0: float, windows: int = 2) -> SimpleNamespace:
    """A clip whose usable frames read `col0` in feature 0 and 0.9 in the first blendshape; frame 0 of each
    window is unusable (all-zero features, as the feature code leaves it)."""
    frames, dim = C.VISUAL_FEATURES.shape
    features = np.zeros((windows, frames, dim), np.float32)
    mask = np.ones((windows, frames), np.float32)
    features[:, :, 0], features[:, :, train.BLENDSHAPES.start] = col0, 0.9
    features[:, 0], mask[:, 0] = 0.0, 0.0
    inputs = {C.VISUAL_FEATURES.name: features, C.FRAME_MASK.name: mask}
    inputs[C.WAVEFORM.name] = np.zeros((windows, C.WINDOW_SAMPLES), np.float32)
    inputs[C.AUDIO_PRESENT.name] = np.zeros((windows, 1), np.float32)
    return SimpleNamespace(subject_id=subject, level=C.LEVELS.index(C.level_of(score)), inputs=inputs)


def test_identity_jitter_moves_a_clips_face_by_one_offset_drawn_from_the_subjects_spread():
    """--identity-jitter: a new identity is one offset on every usable frame of the clip, drawn with the
    covariance of the training subjects' resting faces (their low-pain clips, else all their clips)."""
    clips = [
        _face_clip("A", 1.0, col0=1.0), _face_clip("A", 9.0, col0=7.0),  # A rests at 1 (not its high clip)
        _face_clip("B", 2.0, col0=3.0), _face_clip("C", 8.0, col0=5.0),  # C has no low clip: all of it
    ]  # fmt: skip
    basis = train.identity_basis(clips)
    assert basis.shape == (3, C.VISUAL_FEATURE_DIM)
    np.testing.assert_allclose(basis[:, 0], np.array([-2.0, 0.0, 2.0]) / np.sqrt(2), atol=1e-6)
    assert np.abs(basis[:, 1:]).max() < 1e-6  # every subject rests alike elsewhere
    augment = train.Augmenter(np.random.default_rng(0), "both", basis, jitter=1.5)
    augment.p_drop_audio = augment.p_drop_face = 0.0
    augment.p_identity = 1.0
    x = {k: v.copy() for k, v in _face_clip("D", 1.0, col0=1.0, windows=3).inputs.items()}
    augment(x, None)
    moved = x[C.VISUAL_FEATURES.name][:, 1:, 0] - 1.0
    assert np.ptp(moved) < 1e-6 and abs(moved[0, 0]) > 1e-3  # one offset for the whole clip
    assert not x[C.VISUAL_FEATURES.name][:, 0].any()  # unusable frames stay empty
    blend = x[C.VISUAL_FEATURES.name][:, 1:, train.BLENDSHAPES]
    assert blend.min() >= 0.0 and blend.max() <= 1.0
    off = train.Augmenter(np.random.default_rng(0), "both", basis, jitter=0.0)
    off.p_drop_audio = off.p_drop_face = 0.0
    y = {k: v.copy() for k, v in _face_clip("D", 1.0, col0=1.0).inputs.items()}
    off(y, None)
    assert (y[C.VISUAL_FEATURES.name][:, 1:, 0] == 1.0).all()  # off by default


def test_tiny_training_run_lowers_its_loss_and_writes_the_run(tiny_run, tiny_set):
    out, config = tiny_run
    losses = [h["train"]["loss"] for h in config["history"]]
    assert losses[-1] < losses[0]
    for name in ("model.pt", "config.json", "split.json"):
        assert (out / name).exists()
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    assert isinstance(config["train"]["threads"], int)  # the count used, also when --threads was not given
    loaded = load_model(out)
    assert float(loaded.model.fusion.interval_scale) == pytest.approx(config["interval_scale"], rel=1e-5)
    # the age head is fitted at the end only on enough validation subjects of each group; the tiny set's
    # one per group left it unfitted (a head fitted on them read an adult clip as a neonate)
    assert config["age_head"]["subjects"] == {"neonate": 1, "adult": 1} and not config["age_head"]["fitted"]
    assert float(loaded.model.fusion.infers_age) == 0.0
    assert loaded.model.visual_encoder.feature_std.min() > 0
    assert not torch.all(loaded.model.visual_encoder.feature_mean == 0)  # fitted on the training frames


def test_force_first_removes_all_the_replaced_run_says_of_its_model(tiny_set, tmp_path, monkeypatch):
    """`train --force` removed only finetune.json, and wrote the new split.json at the start and model.pt at
    the end: a run cut short left the old model beside the new split, and the old metrics.json (which
    `avpenet export` records) and single-modality runs (which `avpenet evaluate` scores on the new split)
    stayed even after it finished. Now they are removed once the data has loaded, before anything is
    written."""
    out = tmp_path / "run"
    old = ["model.pt", "config.json", "metrics.json", "finetune.json", "split.json", "notes.txt"]
    for sub in ("", "audio_only/", "visual_only/"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for name in old[:2] if sub else old:
            (out / sub / name).write_text("old run")

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_fit", cut_short)
    args = ["--data", str(tiny_set), "--out", str(out), "--epochs", "1", "--quiet", "--force"]
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "split.json"]  # the user's file stays
    assert (out / "split.json").read_text() != "old run"  # the new run's, alone


def test_force_keeps_the_users_own_files_in_the_single_modality_folders(tiny_set, tmp_path, monkeypatch):
    """`train --force` removed RUN/audio_only/ and RUN/visual_only/ whole, with the notes and plots a user
    kept there. Now only the files a run holds (train.RUN_FILES) go there, and a folder only once empty."""
    out = tmp_path / "run"
    for sub in ("", *train.SINGLE_MODALITY_RUNS):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for name in train.RUN_FILES:
            (out / sub / name).write_text("old run")
    audio_only, visual_only = (out / sub for sub in train.SINGLE_MODALITY_RUNS)
    (audio_only / "notes.txt").write_text("mine")
    (audio_only / "plots").mkdir()
    (audio_only / "plots" / "mae.png").write_text("mine")
    monkeypatch.setattr(train, "_fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    args = ["--data", str(tiny_set), "--out", str(out), "--epochs", "1", "--quiet", "--force"]
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert sorted(p.name for p in audio_only.iterdir()) == ["notes.txt", "plots"]
    assert (audio_only / "plots" / "mae.png").read_text() == "mine"
    assert not visual_only.exists()  # nothing of the user's there: the emptied folder goes
    assert sorted(p.name for p in out.iterdir()) == ["audio_only", "split.json"]


def test_training_fits_the_age_head_on_each_validation_clips_own_subject(tiny_set, tmp_path, monkeypatch):
    """The tiny run ends with the head unfitted (too few subjects), so nothing checked that train gives
    fit_age_head each validation clip's own subject and fits the head once enough subjects are there: with
    the minimum at 2 and 2 validation subjects per group it must be fitted, and one subject id for every
    clip (1 per group) would leave it unfitted."""
    from avpenet import age_inference

    monkeypatch.setattr(age_inference, "MIN_SUBJECTS_PER_GROUP", 2)
    rows = data.read_labels(tiny_set)
    by_age = {
        age: sorted({r["subject_id"] for r in rows if r["age_group"] == age}) for age in ("neonate", "adult")
    }
    assert all(len(subjects) == 4 for subjects in by_age.values())
    split = {part: [s for subjects in by_age.values() for s in subjects[lo:hi]]
             for part, (lo, hi) in {"val": (0, 2), "test": (2, 3), "train": (3, 4)}.items()}  # fmt: skip
    data.write_split(split, tmp_path / "split.json")
    out = tmp_path / "run"
    args = ["--data", str(tiny_set), "--out", str(out), "--split", str(tmp_path / "split.json")]
    config = train.main([*args, "--epochs", "1", "--batch-size", "8", "--quiet"])
    assert config["age_head"]["fitted"] and config["age_head"]["subjects"] == {"neonate": 2, "adult": 2}
    assert float(load_model(out).model.fusion.infers_age) == 1.0
