"""`avpenet train`: fit AVPENet on a dataset directory with a subject-independent split.

    avpenet train --data DIR --out RUN_DIR [--epochs 40 --seed 0 --batch-size 32 --modality both]
    avpenet train --init RUN_DIR --data HOSPITAL_DIR --out RUN_DIR   # fine-tune (avpenet.finetune)

One epoch = every training clip once. With ``--objective clip`` (the default) a clip's loss is taken on what
the service answers for it: all its 3 s windows (1-4) go through the model and their outputs are aggregated
as ``avpenet.aggregate`` does (mean score, mean variance, mean class probabilities); ``--objective window``
scores one random window per clip instead (the earlier recipe). Augmentation, drawn once per clip as a
degraded upload is degraded as a whole, so such inputs at serving time are not new:
- modality dropout: the clip's audio or face is masked as absent (the presence masks the gateway sends), so
  the fusion learns to score from either modality alone (``--drop-face`` sets how often the audio alone
  must carry the score: the audio-only path);
- hospital noise (``avpenet.synth.noise``) mixed into each normalised window at the clip's random SNR, then
  the window re-normalised exactly as the feature code does;
- lower-face occlusion: the visual features of a copy of the clip's face track passed through
  ``avpenet.augment.occlude_lower_face`` (mask, pacifier, hand) replace the clean ones;
- with ``--identity-jitter K``, half the clips with a face get a new identity: one offset on all their usable
  frames, drawn with K^2 times the covariance of the training subjects' resting faces (``identity_basis``).
  Every patient's face is one the model never saw; off by default (docs/EVALUATION.md, *Faces*).
Losses (all on the clip's rater-median score y, the only label a hospital has):
- L1(score, y): the MAE the service is judged on, robust to the rater noise in y;
- beta-NLL (Seitzer et al. 2022, beta = 0.5) of y under N(score, exp(log_variance)): learns the spread used
  for the interval without letting high-variance windows stop learning the mean (plain NLL's failure mode);
- cross-entropy of the 3 pain levels of y: the class head the contract serves;
- with ``--modality-loss W``, W times the same three terms on each clip with both modalities scored from
  its sound alone and from its face alone (the fusion over the same tokens with the other modality masked,
  as an audio-only or landmarks-only upload is scored): an objective of its own for each branch, on every
  step rather than on the share of clips modality dropout draws. Off by default: on the reference's data it
  improved each modality alone a little and the fused score not at all (docs/EVALUATION.md, *How it was
  chosen*).
Early stopping on the validation subjects' clip MAE (clip score = mean of its windows, as served); then the
interval scale is fitted on the validation clips so 90% of them are covered. The run directory gets
model.pt, config.json (model + training config + history + validation metrics) and split.json; a RUN_DIR
that already holds a run is refused unless ``--force`` (``check_out``), which first removes all the old run
says of its model (``clear_replaced_run``); the committed reference and the --init run are always refused.

Why one module over 300 lines: the augmenter, the losses, the loop and the interval calibration
are one training recipe, recorded together in config.json.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avpenet import contract as C
from avpenet import cpus, data
from avpenet.aggregate import Z_INTERVAL
from avpenet.argtypes import non_negative_number, positive_int, positive_number, share
from avpenet.finetune import FREEZE_CHOICES, before_after, keep_frozen_eval, learning_rate, start_model
from avpenet.finetune import REPORT_FILE as FINETUNE_REPORT
from avpenet.labelcheck import check_split
from avpenet.model import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    SINGLE_MODALITY_RUNS,
    AVPENet,
    save_model,
)
from avpenet.predict import INPUT_NAMES, predict_clips, regression_metrics, with_age

HELP = "train AVPENet on a dataset directory (subject-independent split, early stopping)"
# what avpenet writes into a run folder (train: split.json, model.pt, config.json; `avpenet export` records
# metrics.json, `avpenet calibrate` copies finetune.json) and so what --force removes, in this order:
# model.pt and config.json last, so a folder cut short is still refused as a run
RUN_FILES = (METRICS_FILE, FINETUNE_REPORT, data.SPLIT_FILE, CONFIG_FILE, CHECKPOINT_FILE)
MODALITIES = ("both", "audio", "visual")
OBJECTIVES = ("clip", "window")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="dataset directory with labels.csv")
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument(
        "--epochs", type=positive_int, default=40, help="maximum epochs (early stopping ends sooner)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the split, initialisation and augmentation"
    )
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument(
        "--modality", choices=MODALITIES, default="both", help="train a single-modality model"
    )
    parser.add_argument(
        "--lr",
        type=positive_number,
        default=None,
        help="AdamW peak learning rate (default 2e-3; 3e-4 with --init)",
    )
    parser.add_argument(
        "--init", type=Path, help="fine-tune: start from this run directory (e.g. avpenet/reference)"
    )
    parser.add_argument(
        "--freeze",
        choices=FREEZE_CHOICES,
        default="encoders",
        help="with --init: parts kept fixed (default: both encoders; only the fusion adapts)",
    )
    parser.add_argument("--weight-decay", type=non_negative_number, default=0.02)
    parser.add_argument(
        "--objective", choices=OBJECTIVES, default="clip",
        help="loss on the clip's aggregated windows (default, as served) or on one random window",
    )  # fmt: skip
    parser.add_argument(
        "--drop-face", type=share, default=None,
        help=f"share of clips trained with the face masked (default {Augmenter.p_drop_face})",
    )  # fmt: skip
    parser.add_argument(
        "--modality-loss", type=non_negative_number, default=0.0,
        help="weight of the auxiliary per-modality losses (clips scored from each modality alone; default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--identity-jitter", type=non_negative_number, default=0.0,
        help="scale of the new-identity offset added to half the clips' face features (default 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--no-test-report", action="store_true",
        help="with --init: leave the test subjects unscored (when choosing among candidates on the "
        "validation subjects; score the chosen run with `avpenet evaluate`)",
    )  # fmt: skip
    parser.add_argument(
        "--refit-normalisation", action="store_true",
        help="with --init: refit the visual feature normalisation on this data (e.g. tracked faces)",
    )  # fmt: skip
    parser.add_argument(
        "--patience", type=positive_int, default=6, help="epochs without validation gain before stopping"
    )
    parser.add_argument(
        "--max-minutes", type=positive_number, default=22.0, help="stop (keeping the best epoch) after this"
    )
    parser.add_argument("--split", type=Path, help="split.json to use instead of making one from --seed")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default 2, or fewer when fewer CPUs are available to this process)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the run an --out folder already holds: once the data has loaded, its "
        f"{', '.join(reversed(RUN_FILES))} are removed, and the same files in its "
        f"{' and '.join(s + '/' for s in SINGLE_MODALITY_RUNS)} runs (each folder only if then empty; "
        "other files stay); never the committed reference or the --init run",
    )


# --- augmentation ------------------------------------------------------------------------------------------


class Augmenter:
    """Per-window augmentation in numpy; every random choice comes from one seeded generator."""

    p_drop_audio = 0.15  # of windows with both modalities: score from the face alone
    p_drop_face = 0.15  # ... from the audio alone
    p_noise = 0.5  # extra hospital noise
    snr_db = (-5.0, 25.0)  # uniform SNR of the added noise (the data already carries -5..30 dB)
    p_occlude = 0.25  # lower face occluded (when the clip has a face track)
    n_noise_bank = 48  # pre-generated noise windows (generating per step would dominate a step's time)
    p_identity = 0.5  # with --identity-jitter: a new identity's offset on the clip's face features

    def __init__(
        self, rng: np.random.Generator, modality: str, identity: np.ndarray | None = None, jitter: float = 0.0
    ) -> None:
        from avpenet.synth.noise import hospital_noise

        self.rng = rng
        self.modality = modality
        self.identity = identity  # identity_basis(training clips), read with jitter > 0
        self.jitter = jitter
        self.bank = np.stack([hospital_noise(2 * C.WINDOW_SAMPLES, rng) for _ in range(self.n_noise_bank)])

    def noise_window(self) -> np.ndarray:
        row = self.bank[self.rng.integers(len(self.bank))]
        start = self.rng.integers(row.size - C.WINDOW_SAMPLES)
        return row[start : start + C.WINDOW_SAMPLES]

    def __call__(self, x: dict[str, np.ndarray], occluded: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Augment one clip's windows in place (arrays with a leading window axis): one draw per clip."""
        from avpenet.augment import mix_at_snr
        from avpenet.features.audio import normalise_window

        rng = self.rng
        has_audio = x[C.AUDIO_PRESENT.name].max() > 0.5
        has_face = x[C.FRAME_MASK.name].max() > 0.5
        if occluded is not None and rng.uniform() < self.p_occlude:
            x[C.VISUAL_FEATURES.name], x[C.FRAME_MASK.name] = occluded[0].copy(), occluded[1].copy()
        if self.jitter > 0 and has_face and rng.uniform() < self.p_identity:
            new_identity(x, self.jitter * rng.standard_normal(len(self.identity)) @ self.identity)
        if has_audio and rng.uniform() < self.p_noise:
            snr = rng.uniform(*self.snr_db)
            for w, window in enumerate(x[C.WAVEFORM.name]):
                x[C.WAVEFORM.name][w] = normalise_window(mix_at_snr(window, self.noise_window(), snr))
        if self.modality == "both" and has_audio and has_face:
            u = rng.uniform()
            if u < self.p_drop_audio:
                mask_audio(x)
            elif u < self.p_drop_audio + self.p_drop_face:
                mask_face(x)
        restrict(x, self.modality)


BLENDSHAPES = C.feature_slice("blendshapes")


def identity_basis(clips: list[data.Clip]) -> np.ndarray:
    """[subjects, VISUAL_FEATURE_DIM]: each training subject's resting face (the mean features of its usable
    frames in its low-pain clips, or all its clips without one) less their mean, over sqrt(subjects - 1), so
    z @ basis with z ~ N(0, I) is an offset drawn with the subjects' between-identity covariance."""
    rest: dict[str, dict[bool, list[np.ndarray]]] = {}
    for c in clips:
        usable = c.inputs[C.FRAME_MASK.name] > 0.5
        if usable.any():
            means = rest.setdefault(c.subject_id, {True: [], False: []})
            means[C.LEVELS[c.level] == "low"].append(c.inputs[C.VISUAL_FEATURES.name][usable].mean(axis=0))
    rows = np.array([np.mean(m[True] or m[False], axis=0) for m in rest.values()])
    if len(rows) < 2:
        raise ValueError("--identity-jitter needs training clips with a face from at least 2 subjects")
    return (rows - rows.mean(axis=0)) / np.sqrt(len(rows) - 1)


def new_identity(x: dict[str, np.ndarray], offset: np.ndarray) -> None:
    """Add one offset to the usable frames of the clip's windows (a face the tracker never saw: its shape and
    resting expression moved together), the blendshapes kept in 0-1 as the tracker reports them. An unseen
    face cost a model trained without it 8-51% by face; this took most of that away for one face of three
    (docs/EVALUATION.md, *Faces*)."""
    usable = x[C.FRAME_MASK.name] > 0.5
    features = x[C.VISUAL_FEATURES.name]
    features[usable] += offset.astype(features.dtype)
    features[usable, BLENDSHAPES] = np.clip(features[usable, BLENDSHAPES], 0.0, 1.0)


def mask_audio(x: dict[str, np.ndarray]) -> None:
    """Mark the audio of windows (any leading shape) absent, as the gateway does for a silent upload."""
    x[C.WAVEFORM.name] = np.zeros_like(x[C.WAVEFORM.name])
    x[C.AUDIO_PRESENT.name] = np.zeros_like(x[C.AUDIO_PRESENT.name])


def mask_face(x: dict[str, np.ndarray]) -> None:
    """Mark the face of windows absent (no usable frame)."""
    x[C.VISUAL_FEATURES.name] = np.zeros_like(x[C.VISUAL_FEATURES.name])
    x[C.FRAME_MASK.name] = np.zeros_like(x[C.FRAME_MASK.name])


def restrict(x: dict[str, np.ndarray], modality: str) -> dict[str, np.ndarray]:
    """Keep only the modality a single-modality model uses (in place; returns x)."""
    if modality == "audio":
        mask_face(x)
    elif modality == "visual":
        mask_audio(x)
    return x


# --- training --------------------------------------------------------------------------------------------


def fit_visual_normalisation(model: AVPENet, clips: list[data.Clip]) -> None:
    """Per-feature mean/std over the usable frames of the training windows, stored in the visual encoder."""
    feats = np.concatenate(
        [c.inputs[C.VISUAL_FEATURES.name].reshape(-1, C.VISUAL_FEATURE_DIM) for c in clips]
    )
    mask = np.concatenate([c.inputs[C.FRAME_MASK.name].reshape(-1) for c in clips]) > 0.5
    if mask.sum() < 2:
        return
    valid = feats[mask].astype(np.float64)
    enc = model.visual_encoder
    enc.feature_mean.copy_(torch.from_numpy(valid.mean(axis=0)).float())
    enc.feature_std.copy_(torch.from_numpy(np.maximum(valid.std(axis=0), 1e-3)).float())


def loss_terms(out: dict[str, torch.Tensor], y: torch.Tensor, level: torch.Tensor) -> dict[str, torch.Tensor]:
    """y (B, 1) clip scores, level (B,) level indices -> the three loss terms (means over the batch)."""
    score, log_var = out[C.SCORE.name], out[C.LOG_VARIANCE.name]
    var = torch.exp(log_var)
    nll = 0.5 * (log_var + (y - score) ** 2 / var)
    return {
        "l1": (score - y).abs().mean(),
        "beta_nll": (nll * var.detach() ** 0.5).mean(),
        "ce": F.cross_entropy(out["class_logits"], level),
    }


LOSS_WEIGHTS = {"l1": 1.0, "beta_nll": 1.0, "ce": 0.5}
ALONE = ("audio_alone", "face_alone")  # the auxiliary per-modality terms (--modality-loss)


def batch_loss(
    model: AVPENet, batch, owner: torch.Tensor, y: torch.Tensor, level: torch.Tensor, weight: float
):
    """(loss, terms, clips) of a batch of clips: the fused clip terms and, with `weight`, each modality's own
    (the three terms weighted alike, summed) on the clips that have both; `clips` is how many clips each
    term is the mean over. The encoders run once; a modality is masked in the fusion only, which is what
    the served masks do (its tokens are then never attended)."""
    waveform, visual, frame_mask, audio_present, age = batch
    audio_tokens, visual_tokens = model.tokens(waveform, visual, frame_mask, audio_present)

    def clips(mask: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model.fusion.predict(audio_tokens, visual_tokens, mask, present, age)
        return clip_outputs(out, owner, len(y))

    terms = loss_terms(clips(frame_mask, audio_present), y, level)
    counts = dict.fromkeys(terms, len(y))
    loss = sum(LOSS_WEIGHTS[k] * v for k, v in terms.items())
    if weight > 0:
        per_clip = torch.zeros(len(y), 2).index_add(
            0, owner, torch.stack([audio_present.amax(dim=1), frame_mask.amax(dim=1)], dim=1)
        )
        both = (per_clip > 0).all(dim=1)
        if both.any():
            alone_masks = (  # in ALONE's order: the face masked, then the sound
                (torch.zeros_like(frame_mask), audio_present),
                (frame_mask, torch.zeros_like(audio_present)),
            )
            for name, (mask, present) in zip(ALONE, alone_masks, strict=True):
                alone = {k: v[both] for k, v in clips(mask, present).items()}
                terms[name] = sum(
                    LOSS_WEIGHTS[k] * v for k, v in loss_terms(alone, y[both], level[both]).items()
                )
                counts[name] = int(both.sum())
                loss = loss + weight * terms[name]
    return loss, terms, counts


def clip_outputs(out: dict[str, torch.Tensor], owner: torch.Tensor, n_clips: int) -> dict[str, torch.Tensor]:
    """Window outputs -> clip outputs as avpenet.aggregate forms them (mean score, mean variance, mean class
    probabilities over the windows with a modality, or all when none has one), differentiable; owner[i] is
    the clip (0..n_clips-1) of window i."""
    dtype = out[C.SCORE.name].dtype
    informed = (out[C.MODALITY_WEIGHTS.name].sum(dim=1) > 0).to(dtype)
    any_informed = torch.zeros(n_clips, dtype=dtype).index_add(0, owner, informed) > 0
    weight = torch.where(any_informed[owner], informed, torch.ones_like(informed)).unsqueeze(1)
    counts = torch.zeros(n_clips, 1, dtype=dtype).index_add(0, owner, weight)

    def mean(t: torch.Tensor) -> torch.Tensor:
        return t.new_zeros(n_clips, t.shape[1]).index_add(0, owner, t * weight) / counts

    probs = mean(torch.softmax(out["class_logits"], dim=-1))
    return {
        C.SCORE.name: mean(out[C.SCORE.name]),
        C.LOG_VARIANCE.name: torch.log(mean(torch.exp(out[C.LOG_VARIANCE.name]))),
        "class_logits": torch.log(probs.clamp_min(1e-6)),  # log-probabilities: cross-entropy is their NLL
    }


def calibrate_interval(
    model: AVPENet, val_inputs: list[dict[str, np.ndarray]], val_scores: np.ndarray
) -> float:
    """Set fusion.interval_scale by split conformal calibration on the validation CLIPS: the
    ceil((n+1)·0.9)-th smallest normalised error, so new clips like them are covered at least 90% of the time
    (the plain 0.9 quantile covers (1 + 0.9(n-1))/(n+1): 87.4% expected on a hospital's 30 clips). Requests
    without an age group have their own step (`calibrate_unknown_age`)."""
    model.fusion.interval_scale.fill_(1.0)
    scale = _conformal_scale(model, val_inputs, val_scores)
    model.fusion.interval_scale.fill_(max(scale, 1e-3))
    return scale


def calibrate_unknown_age(
    model: AVPENet,
    val_inputs: list[dict[str, np.ndarray]],
    val_scores: np.ndarray,
    subjects: list[str],
    head_kept_valid: bool = True,
) -> dict:
    """What a request without an age group is scored with, fitted on the validation clips (`subjects`: each
    one's subject): the age head that reads the age from the clip (`age_inference.fit_age_head`), then
    fusion.unknown_age_scale, set as the shared scale is on the same clips sent without their age (the
    inferred age is sometimes wrong, so their errors differ). The record: {"scale", "age_head"}. Clips of one
    age group, or of too few subjects of either, cannot refit the head; `head_kept_valid` False (the encoders
    it reads have changed) then turns it off rather than keep it."""
    from avpenet.age_inference import fit_age_head

    age_head = fit_age_head(model, val_inputs, subjects)
    if not age_head["fitted"] and not head_kept_valid and float(model.fusion.infers_age):
        model.fusion.infers_age.fill_(0.0)
        reason = age_head["why"].rpartition("; kept")[0]
        age_head["why"] = f"{reason}, and the encoders the head it had read changed: turned off"
        age_head["kept_head"] = False
    withheld = [with_age(x, C.UNKNOWN_AGE) for x in val_inputs]
    model.fusion.unknown_age_scale.fill_(1.0)
    scale = _conformal_scale(model, withheld, val_scores)
    model.fusion.unknown_age_scale.fill_(max(scale, 1e-3))
    return {"scale": float(model.fusion.unknown_age_scale.item()), "age_head": age_head}


def conformal_shortfall(n: int) -> str | None:
    """What a split-conformal 90% interval fitted on `n` clips guarantees, when it is less than 90%: the rank
    ceil((n+1)·0.9) needs at least 9 clips; with fewer the scale is their largest error, which is guaranteed
    to cover n / (n+1) of new clips like them (5 clips: 83%), not 90%. None from 9 clips on."""
    if n == 0:
        return "no calibration clips: the interval scale is 1, uncalibrated"
    if _conformal_rank(n) <= n:  # the rank _conformal_scale takes exists
        return None
    needed = next(k for k in range(n, 10**4) if _conformal_rank(k) <= k)
    return (
        f"the 90% interval was calibrated on {n} clip(s), fewer than the {needed} it needs: it is guaranteed "
        f"to cover {n / (n + 1):.0%} of new clips like them, not 90% (add clips: avpenet calibrate --add DIR)"
    )


def _conformal_rank(n: int) -> int:
    """Split conformal's rank among n sorted errors: ceil((n+1)·0.9), past the last one below 9 clips."""
    return math.ceil((n + 1) * C.INTERVAL_COVERAGE)


def _conformal_scale(model: AVPENet, inputs: list[dict[str, np.ndarray]], scores: np.ndarray) -> float:
    """The ceil((n+1)·0.9)-th smallest |error| / (Z · sigma) of the clips (1 with none)."""
    pred = predict_clips(model, inputs)
    sigma = np.exp(0.5 * pred[C.LOG_VARIANCE.name])
    z = np.sort(np.abs(scores - pred[C.SCORE.name]) / np.maximum(sigma, 1e-6) / Z_INTERVAL)
    rank = min(_conformal_rank(len(z)), len(z))
    return float(z[rank - 1]) if len(z) else 1.0


def batches(order: np.ndarray, batch_size: int):
    for lo in range(0, len(order), batch_size):
        yield order[lo : lo + batch_size]


def _split_clips(args: argparse.Namespace) -> tuple[dict, list[data.Clip], list[data.Clip]]:
    """The split (given, the dataset's own, or made by subject) and the training and validation clips."""
    if args.split:
        split = data.read_split(args.split)
    elif (Path(args.data) / data.SPLIT_FILE).exists():
        split = data.read_split(Path(args.data) / data.SPLIT_FILE)  # the dataset's own split wins
    else:
        rows = data.read_labels(args.data)
        split = data.make_split(rows, args.seed)
        check_split(split, rows)
    clips = data.load_clips(args.data, split["train"] + split["val"], progress=not args.quiet)
    train_set = set(split["train"])
    train_clips = [c for c in clips if c.subject_id in train_set]
    val_clips = [c for c in clips if c.subject_id not in train_set]
    if not train_clips or not val_clips:
        raise ValueError(f"need training and validation clips; got {len(train_clips)} and {len(val_clips)}")
    return split, train_clips, val_clips


def _occluded_windows(clips: list[data.Clip], rng: np.random.Generator, modality: str) -> list:
    """Per training clip with a face: its windows' visual inputs with the lower face occluded (else None).

    Computed once and swapped in at random by the Augmenter; the raw tracks are freed afterwards.
    """
    from avpenet.augment import occlude_lower_face
    from avpenet.features.visual import frame_features

    occluded: list[tuple[np.ndarray, np.ndarray] | None] = []
    for c in clips:
        if c.track is not None and modality != "audio" and c.track.face_present.any():
            f, m = frame_features(occlude_lower_face(c.track, rng))
            occluded.append(data.visual_inputs(f, m, c.n_windows))
        else:
            occluded.append(None)
    return occluded


def _optimiser(model: AVPENet, args: argparse.Namespace, steps_per_epoch: int):
    """AdamW (no decay on biases, norms and position embeddings), warm-up then cosine decay over `plan`.

    The cosine runs over the epochs that will actually run: `plan["total"]` is re-planned after every epoch
    from its duration and the time budget left, so a budget-limited run still anneals instead of stopping at
    a high learning rate.
    """
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos_" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate(args),
    )
    plan = {"total": max(1, args.epochs * steps_per_epoch)}
    warmup = min(steps_per_epoch, plan["total"] // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / plan["total"], 1.0))),
    )
    return opt, sched, plan


def _clip_batch(clips, occluded, idx, augment, rng, objective: str):
    """The batch's windows as model inputs (all of each clip's, or one at random) and each window's clip."""
    rows, owner = [], []
    for j, i in enumerate(idx):
        c = clips[i]
        ws = np.arange(c.n_windows) if objective == "clip" else rng.integers(c.n_windows, size=1)
        x = {k: c.inputs[k][ws].copy() for k in INPUT_NAMES}
        occ = occluded[i]
        augment(x, None if occ is None else (occ[0][ws], occ[1][ws]))
        rows.append(x)
        owner += [j] * len(ws)
    batch = [torch.from_numpy(np.concatenate([r[k] for r in rows])) for k in INPUT_NAMES]
    return batch, torch.tensor(owner, dtype=torch.int64)


def _train_epoch(model, clips, occluded, augment, opt, sched, rng, args, epoch: int) -> dict[str, float]:
    """Every training clip once (its windows aggregated, or one window), augmented; each loss term's mean
    over the clips it was computed on (the per-modality terms: the clips with both)."""
    from tqdm import tqdm

    model.train()
    keep_frozen_eval(model, getattr(model, "frozen_parts", ()))
    order = rng.permutation(len(clips))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    desc = f"epoch {epoch + 1}/{args.epochs}"
    bar = tqdm(list(batches(order, args.batch_size)), desc=desc, disable=args.quiet)
    for idx in bar:
        batch, owner = _clip_batch(clips, occluded, idx, augment, rng, args.objective)
        y = torch.tensor([[clips[i].score] for i in idx], dtype=torch.float32)
        level = torch.tensor([clips[i].level for i in idx], dtype=torch.int64)
        loss, terms, clips_of = batch_loss(model, batch, owner, y, level, args.modality_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        sched.step()
        for k, v in {"loss": loss, **terms}.items():
            n = clips_of.get(k, len(idx))
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            counts[k] = counts.get(k, 0) + n
        bar.set_postfix(loss=f"{loss.item():.3f}", l1=f"{terms['l1'].item():.3f}")
    return {k: v / counts[k] for k, v in sums.items()}


def _stop_reason(
    args, epoch: int, improved: bool, best_epoch: int, plan: dict, elapsed: float, last_s: float
):
    """Why training stops after `epoch` (0-based), or None to go on."""
    done = epoch + 1
    if not improved and done - best_epoch >= args.patience and done >= plan["epochs"] / 2:
        # only once the learning rate has decayed: early high-LR epochs are noisy by design
        return f"no validation gain for {args.patience} epochs"
    if done >= plan.get("epochs", args.epochs):
        return f"schedule done ({plan['epochs']} epochs fit --epochs and --max-minutes)"
    if elapsed + last_s > args.max_minutes * 60:
        return f"time budget ({args.max_minutes} min) reached"
    return None


def _fit(
    model, train_clips, occluded, val_inputs, val_scores, rng, args, t0: float
) -> tuple[dict, list, dict, str]:
    """The epochs with early stopping; returns (best, history, plan, why it stopped) with the best weights."""
    steps_per_epoch = math.ceil(len(train_clips) / args.batch_size)
    opt, sched, plan = _optimiser(model, args, steps_per_epoch)
    identity = identity_basis(train_clips) if args.identity_jitter > 0 else None
    augment = Augmenter(rng, args.modality, identity, args.identity_jitter)
    if getattr(args, "drop_face", None) is not None:
        augment.p_drop_face = args.drop_face
    history: list[dict] = []
    best = {"val_mae": float("inf"), "epoch": -1, "state": None}
    stopped = "max epochs"
    for epoch in range(args.epochs):
        t_epoch = time.monotonic()
        train_stats = _train_epoch(model, train_clips, occluded, augment, opt, sched, rng, args, epoch)
        val = regression_metrics(predict_clips(model, val_inputs)[C.SCORE.name], val_scores)
        elapsed = time.monotonic() - t0
        # re-plan from the latest epoch's duration (the machine is shared: its speed changes)
        last_s = time.monotonic() - t_epoch
        left = args.max_minutes * 60 - elapsed
        plan["epochs"] = max(epoch + 2, min(args.epochs, epoch + 1 + int(left / last_s)))
        plan["total"] = plan["epochs"] * steps_per_epoch
        history.append(
            {"epoch": epoch + 1, "train": train_stats, "val_mae": val["mae"], "elapsed_s": elapsed}
        )
        if not args.quiet:
            print(
                f"epoch {epoch + 1}: train loss {train_stats['loss']:.3f} l1 {train_stats['l1']:.3f} | "
                f"val MAE {val['mae']:.3f} r {val['pearson_r']:.3f} acc {val['accuracy_3class']:.3f} | "
                f"{elapsed / 60:.1f} min",
                flush=True,
            )
        improved = val["mae"] < best["val_mae"]
        if improved:
            best = {"val_mae": val["mae"], "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        reason = _stop_reason(args, epoch, improved, best["epoch"], plan, elapsed, last_s)
        if reason:
            stopped = reason
            break
    if best["state"] is not None:  # --epochs 0 (a fine-tune that only refits normalisation) keeps the start
        model.load_state_dict(best["state"])
    return best, history, plan, stopped


def _run_record(args, split: dict, n_clips: tuple[int, int], fit: tuple, scale: float, val: dict, t0: float):
    """config.json's training part: arguments, augmentation, data, how the run went, validation metrics."""
    best, history, plan, stopped = fit
    return {
        "train": {
            **{
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func",)
            },
            "augment": {
                k: getattr(Augmenter, k) for k in dir(Augmenter) if k.startswith(("p_", "snr", "n_"))
            },
            "loss_weights": LOSS_WEIGHTS,
        },
        "modality": args.modality,
        "data": {
            "dir": str(args.data),
            "labels_sha256": data.labels_digest(args.data),
            "plan": data.read_plan(args.data),  # a partial render of this plan holds these subjects too
            "train_subjects": len(split["train"]),
            "val_subjects": len(split["val"]),
            "test_subjects": len(split["test"]),
            "train_clips": n_clips[0],
            "val_clips": n_clips[1],
        },
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "epochs_planned": plan.get("epochs"),
        "stopped": stopped,
        "interval_scale": scale,
        "val": val,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "history": history,
    }


def check_out(out: Path, force: bool, init: Path | None = None) -> None:
    """Refuse (ValueError: exit 2), before anything is loaded, an --out that already holds a run unless
    `force` (a second run used to replace its model.pt and split.json, another test set, silently, even once
    exported), and, forced or not, one that is the committed reference or the --init run (or would remove it:
    ``clear_replaced_run``)."""
    from avpenet.model import REFERENCE_DIR

    where = Path(out).resolve()
    if where.is_relative_to(REFERENCE_DIR):
        raise ValueError(f"--out {out} is the committed reference run ({REFERENCE_DIR}); give a new folder")
    start = Path(init).resolve() if init is not None else None
    if start is not None and (
        start == where or any(start.is_relative_to(where / s) for s in SINGLE_MODALITY_RUNS)
    ):
        raise ValueError(
            f"--out {out} is or holds the --init run {init}; give a new folder for the fine-tune"
        )
    held = held_run(where)
    if held and not force:
        raise ValueError(
            f"--out {out} already holds a run ({', '.join(held)}); give a new folder, or --force to "
            "replace it"
        )


def held_run(folder: Path) -> list[str]:
    """The files that make `folder` a run (model.pt, config.json) found there: a run `train --out` and
    `calibrate --out` would replace."""
    return [name for name in (CHECKPOINT_FILE, CONFIG_FILE) if (Path(folder) / name).exists()]


def clear_replaced_run(out_dir: Path) -> None:
    """--force: remove what the replaced run says of its model before this run writes anything, so a run
    cut short leaves no folder mixing it with the new split: its test figures (`avpenet export` records
    metrics.json), its fine-tune record (`avpenet calibrate` copies finetune.json), its single-modality
    runs (`avpenet evaluate` scores them on the new split). model.pt and config.json go last: until then
    the folder is still refused as a run. Only RUN_FILES go: a single-modality folder is removed once
    empty, and what else a user keeps there (notes, plots) stays with it."""
    for sub in SINGLE_MODALITY_RUNS:
        if (out_dir / sub).is_dir():
            _remove_run_files(out_dir / sub)
            if not any((out_dir / sub).iterdir()):
                (out_dir / sub).rmdir()
    _remove_run_files(out_dir)


def _remove_run_files(folder: Path) -> None:
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)


def train(args: argparse.Namespace) -> dict:
    """Run one training; returns the config written to RUN_DIR/config.json."""
    check_out(args.out, args.force, args.init)
    t0 = time.monotonic()
    args.lr = learning_rate(args)  # recorded in config.json as used
    args.threads = cpus.threads(args.threads, default=2)  # config.json records the count used
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out_dir = Path(args.out)
    split, train_clips, val_clips = _split_clips(args)
    occluded = _occluded_windows(train_clips, rng, args.modality)
    for c in (*train_clips, *val_clips):
        c.track = None  # the raw landmarks are no longer needed: free ~0.3 MB per clip

    model, model.frozen_parts = start_model(args)
    # --out is made only now, when the data and --init have loaded: a refused run leaves no empty folder
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.force:
        clear_replaced_run(out_dir)
    (out_dir / FINETUNE_REPORT).unlink(missing_ok=True)  # a fine-tune cut short before its model.pt: not ours
    data.write_split(split, out_dir / data.SPLIT_FILE)
    if args.init is None or args.refit_normalisation:  # a fine-tune keeps its checkpoint's normalisation
        fit_visual_normalisation(model, train_clips)
    model.audio_encoder.to(memory_format=torch.channels_last)
    val_inputs = [restrict(dict(c.inputs), args.modality) for c in val_clips]
    val_scores = np.array([c.score for c in val_clips])
    fit = _fit(model, train_clips, occluded, val_inputs, val_scores, rng, args, t0)

    model.audio_encoder.to(memory_format=torch.contiguous_format)
    scale = calibrate_interval(model, val_inputs, val_scores)
    same_encoders = (
        set(model.frozen_parts) >= {"audio_encoder", "visual_encoder"} and not args.refit_normalisation
    )
    subjects = [c.subject_id for c in val_clips]
    unknown_age = calibrate_unknown_age(
        model, val_inputs, val_scores, subjects, head_kept_valid=same_encoders
    )
    val_pred = predict_clips(model, val_inputs)
    val = regression_metrics(val_pred[C.SCORE.name], val_scores)
    lo, hi = val_pred[C.INTERVAL.name][:, 0], val_pred[C.INTERVAL.name][:, 1]
    val["interval_coverage_90"] = float(np.mean((val_scores >= lo) & (val_scores <= hi)))
    config = _run_record(args, split, (len(train_clips), len(val_clips)), fit, scale, val, t0)
    config.update(unknown_age_interval_scale=unknown_age["scale"], age_head=unknown_age["age_head"])
    if args.init is not None and not args.no_test_report:
        config["finetune"] = before_after(args, model, split, out_dir)
    save_model(model, out_dir, extra=config)
    print(
        f"best epoch {fit[0]['epoch']} ({fit[3]}): val clip MAE {val['mae']:.3f}, "
        f"interval scale {scale:.3f}; wrote {out_dir} in {config['elapsed_s'] / 60:.1f} min",
        flush=True,
    )
    if args.init is not None and args.no_test_report:
        print("test subjects not scored (--no-test-report): `avpenet evaluate` scores the run", flush=True)
    if not unknown_age["age_head"]["fitted"]:  # requests without an age: read no age, question none
        print(f"age head not fitted on the validation clips ({unknown_age['age_head']['why']})", flush=True)
    if shortfall := conformal_shortfall(len(val_clips)):
        print(shortfall, flush=True)
    return config


def run(args: argparse.Namespace) -> int:
    from avpenet.labelcheck import LabelsError

    try:
        train(args)
    except LabelsError as exc:  # bad rows: reported with line numbers, nothing trained
        print(f"avpenet train: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> dict:
    """Programmatic entry (tests): the same arguments as the CLI."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return train(parser.parse_args(argv))
