"""Reference points for AVPE-Synth scores, computed from the generator's own draws (no signals, no model).

    python -m avpenet.synth.bounds [--seed 0] [--subjects 428] [--json OUT.json] [--pre-5789a91]

Why: a model's MAE means little without knowing what is reachable. Three references, all on the same
subject-independent test split the reference model is judged on (``data.make_split(rows, seed)["test"]``):

- ``latent_ceiling``: the best any predictor can do knowing the clip's LATENT pain exactly. It predicts the
  median of the label's distribution given (latent pain, age group), with the seed's rater pools (Monte Carlo
  over which raters and their noise). This is the real floor of the MAE against the labels.
- ``cue_upper_reference``: gradient boosting (absolute-error loss, so it estimates the conditional median)
  trained on the train+val subjects from every per-clip cue the generator turns into signals: audio arousal
  (only when the clip vocalises and has audio), face arousal (only when the face is visible), episode count
  and coverage (recomputed from the clip's signal stream exactly as ``make_clip`` draws them), vocalising,
  occlusion, face missing, missing files, confounders, duration and age group. A model that sees arousal only
  through audio and video should do worse; one that does better has found a cue this list lacks.
- ``cue_upper_reference_with_gains``: the same plus the subject's hidden expressivity gains (a clip alone does
  not reveal them): how much knowing the person would add.
``label_noise_mae`` is MAE(label, latent pain): what predicting the latent pain itself scores (NOT a floor:
the conditional median does better, because label rounding and the rater pool bias the labels).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from avpenet import contract
from avpenet.synth import dataset

MC_DRAWS = 4000  # Monte Carlo draws of a rater triple per clip for the conditional median
CONFOUNDERS = ("fussing", "cough", "babble", "sigh", "smile", "talking", "yawn")
OLD_5789A91 = {  # the expressivity constants before commit 5789a91 narrowed them
    "STRONG_GAIN": (0.75, 1.25),
    "FACE_AROUSAL_NOISE": 0.08,
    "SHARED_AROUSAL_NOISE": 0.05,
}


def episode_cues(p: dataset.ClipPlan) -> tuple[int, float]:
    """(number of distress episodes, share of the clip they cover), drawn as make_clip draws them."""
    rng = dataset._rng(p.seed, dataset._CLIP_SIGNAL, p.index)
    eps = dataset._episodes(p.latent_pain, p.duration_s, rng)
    return len(eps), sum(e - s for s, e in eps) / p.duration_s


def cue_matrix(plans: list[dataset.ClipPlan], with_gains: bool = False) -> np.ndarray:
    """[N, F] per-clip cues (NaN where the signal does not carry the cue: the boosting handles NaN)."""
    rows = []
    for p in plans:
        audio_seen = p.vocalizing and not p.audio_missing
        face_seen = not (p.visual_missing or p.face_mostly_missing)
        n_eps, coverage = episode_cues(p)
        conf = set(p.audio_confounders + p.face_confounders)
        row = [
            p.audio_arousal if audio_seen else np.nan,
            p.face_arousal if face_seen else np.nan,
            float(n_eps),
            coverage,
            float(p.vocalizing),
            float(p.occluded),
            float(p.face_mostly_missing),
            float(p.audio_missing),
            float(p.visual_missing),
            p.duration_s,
            float(p.subject.age_group == "neonate"),
            *(float(c in conf) for c in CONFOUNDERS),
        ]
        if with_gains:
            row += [p.subject.audio_gain, p.subject.face_gain]
        rows.append(row)
    return np.asarray(rows, np.float64)


def conditional_median(plans: list[dataset.ClipPlan], seed: int, draws: int = MC_DRAWS) -> np.ndarray:
    """Per clip, the median of its label given its latent pain and age group (the seed's rater pools)."""
    pools = dataset._rater_pools(seed)
    rng = np.random.default_rng(12345)
    out = np.empty(len(plans))
    for i, p in enumerate(plans):
        biases = pools[p.subject.age_group]
        idx = np.argsort(rng.uniform(size=(draws, len(biases))), axis=1)[:, :3]
        noisy = p.latent_pain + biases[idx] + rng.normal(0, dataset.RATER_SIGMA, (draws, 3))
        if p.subject.age_group == "neonate":
            k = dataset.NIPS_MAX
            scores = np.clip(np.round(noisy * k / contract.SCORE_MAX), 0, k) * contract.SCORE_MAX / k
        else:
            scores = np.clip(np.round(noisy), contract.SCORE_MIN, contract.SCORE_MAX)
        out[i] = np.median(np.median(scores, axis=1))
    return out


def _fit_predict(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingRegressor(
        loss="absolute_error", max_iter=400, learning_rate=0.05, max_leaf_nodes=15, random_state=0
    )
    with threadpool_limits(1):  # OpenMP threads spin for minutes on a busy 2-core box; one thread is enough
        model.fit(x[train], y[train])
        return np.clip(model.predict(x), contract.SCORE_MIN, contract.SCORE_MAX)


def compute(seed: int = 0, n_subjects: int = dataset.DEFAULT_SUBJECTS, draws: int = MC_DRAWS) -> dict:
    """Every reference on the seed's test subjects (and the label-noise figures on all clips)."""
    from avpenet.data import make_split
    from avpenet.predict import regression_metrics

    plans = dataset.plan(seed, n_subjects)
    rows = [dataset.label_row(p) for p in plans]
    split = make_split(rows, seed)
    test_subjects = set(split["test"])
    test = np.array([p.subject.subject_id in test_subjects for p in plans])
    y = np.array([p.score for p in plans])
    latent = np.array([p.latent_pain for p in plans])
    cond = conditional_median(plans, seed, draws)
    out: dict = {
        "seed": seed,
        "clips": len(plans),
        "test_clips": int(test.sum()),
        "test_subjects": len(test_subjects),
        "label_noise_mae_all": float(np.abs(y - latent).mean()),
        "label_noise_mae": float(np.abs(y[test] - latent[test]).mean()),
        "latent_ceiling_all": float(np.abs(y - cond).mean()),
        "latent_ceiling": regression_metrics(cond[test], y[test]),
        "predict_mean": float(np.abs(y[test] - y[~test].mean()).mean()),
    }
    ages = np.array([p.subject.age_group for p in plans])
    for key, gains in (("cue_upper_reference", False), ("cue_upper_reference_with_gains", True)):
        pred = _fit_predict(cue_matrix(plans, gains), y, ~test)
        out[key] = regression_metrics(pred[test], y[test])
        out[key]["mae_by_age"] = {
            a: float(np.abs(pred[test & (ages == a)] - y[test & (ages == a)]).mean())
            for a in ("neonate", "adult")
        }
    return out


def with_constants(values: dict, fn, *args):
    """Run fn with some dataset module constants replaced (restored afterwards)."""
    saved = {k: getattr(dataset, k) for k in values}
    try:
        for k, v in values.items():
            setattr(dataset, k, v)
        return fn(*args)
    finally:
        for k, v in saved.items():
            setattr(dataset, k, v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avpenet.synth.bounds", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subjects", type=int, default=dataset.DEFAULT_SUBJECTS)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--pre-5789a91", action="store_true", help="also compute them with the expressivity before 5789a91"
    )
    args = parser.parse_args(argv)
    result = {"current": compute(args.seed, args.subjects)}
    if args.pre_5789a91:
        result["pre_5789a91"] = with_constants(OLD_5789A91, compute, args.seed, args.subjects)
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
