"""The AVPE-Synth reference points (avpenet.synth.bounds) order as they must on a small plan."""

from __future__ import annotations

import numpy as np

from avpenet.synth import bounds, dataset


def test_references_are_ordered_and_the_conditional_median_beats_the_latent_pain():
    r = bounds.compute(seed=3, n_subjects=60, draws=400)
    assert r["test_clips"] > 20
    # predicting the label's conditional median given the latent pain beats predicting the latent pain
    assert r["latent_ceiling_all"] < r["label_noise_mae_all"]
    # every cue-based reference sits between that ceiling and predicting the mean
    for key in ("cue_upper_reference", "cue_upper_reference_with_gains"):
        assert r["latent_ceiling"]["mae"] < r[key]["mae"] < r["predict_mean"]


def test_episode_cues_replay_the_clip_signal_stream():
    plans = dataset.plan(5, 12)
    cues = np.array([bounds.episode_cues(p) for p in plans])
    pain = np.array([p.latent_pain for p in plans])
    assert ((cues[:, 1] >= 0) & (cues[:, 1] <= 1)).all()
    assert np.corrcoef(pain, cues[:, 1])[0, 1] > 0.6  # coverage grows with pain, as _episodes draws it
    # the same draw make_clip makes first from the clip's signal stream
    p = plans[0]
    eps = dataset._episodes(p.latent_pain, p.duration_s, dataset._rng(p.seed, dataset._CLIP_SIGNAL, p.index))
    assert bounds.episode_cues(p)[0] == len(eps)


def test_old_constants_are_restored():
    before = dataset.STRONG_GAIN
    assert bounds.with_constants(bounds.OLD_5789A91, lambda: dataset.STRONG_GAIN) == (0.75, 1.25)
    assert before == dataset.STRONG_GAIN
