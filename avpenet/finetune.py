"""Fine-tuning a trained AVPENet on a hospital's own labelled clips (`avpenet train --init RUN_DIR`).

A hospital has tens to a few hundred labelled clips, not thousands, so training from scratch would overfit and
throw away what the reference learned. Fine-tuning therefore starts from a checkpoint and, by default:
- freezes both encoders (``--freeze encoders``): the audio ResNet and the visual temporal encoder keep the
  reference's weights, batch-norm statistics and feature normalisation; only the cross-modal fusion and its
  heads (49% of the parameters) adapt to the hospital's recordings, raters and scale use;
- uses a learning rate 7x lower than training from scratch (3e-4 instead of 2e-3), so a few noisy clips
  cannot move the weights far from the reference;
- keeps everything else of ``avpenet train``: the subject-independent split, augmentation, early stopping on
  the validation subjects and the 90% interval calibration on them.
After training, the start checkpoint and the fine-tuned one are both scored on the held-out TEST subjects of
the hospital's own split (never seen in training or early stopping), written to RUN_DIR/finetune.json and
printed, so the hospital sees whether fine-tuning helped before it exports anything. Candidate runs of a
search pass ``--no-test-report``: chosen on the validation subjects, only the one kept is scored on the test
subjects (by ``avpenet evaluate``), so the test figure stays an estimate for unseen patients.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet.durable import replace_text

FREEZE_CHOICES = ("encoders", "none", "audio_encoder", "visual_encoder")
FINETUNE_LR = 3e-4
SCRATCH_LR = 2e-3
REPORT_FILE = "finetune.json"


def frozen_parts(which: str) -> tuple[str, ...]:
    """The model parts `--freeze` keeps fixed."""
    if which == "encoders":
        return ("audio_encoder", "visual_encoder")
    return () if which == "none" else (which,)


def start_model(args):
    """(model, parts kept frozen): the --init checkpoint with its frozen parts, or a fresh model."""
    from avpenet.model import AVPENet, AVPENetConfig, load_model

    if args.init is None:
        return AVPENet(AVPENetConfig()), ()
    model = load_model(args.init).model
    frozen = frozen_parts(args.freeze)
    for name in frozen:
        for p in model.part(name).parameters():
            p.requires_grad_(False)
    return model, frozen


def learning_rate(args) -> float:
    """--lr if given, else the fine-tuning or the from-scratch default."""
    if args.lr is not None:
        return args.lr
    return FINETUNE_LR if args.init is not None else SCRATCH_LR


def keep_frozen_eval(model, frozen: tuple[str, ...]) -> None:
    """After model.train(): frozen parts stay in eval mode (no dropout, batch-norm statistics unchanged)."""
    for name in frozen:
        model.part(name).eval()


def _metrics(model, clips, modality: str) -> dict:
    from avpenet.predict import predict_clips, regression_metrics
    from avpenet.train import restrict

    inputs = [restrict(dict(c.inputs), modality) for c in clips]
    scores = np.array([c.score for c in clips])
    pred = predict_clips(model, inputs)
    out = regression_metrics(pred[C.SCORE.name], scores)
    lo, hi = pred[C.INTERVAL.name][:, 0], pred[C.INTERVAL.name][:, 1]
    out["interval_coverage_90"] = float(np.mean((scores >= lo) & (scores <= hi)))
    out["mean_score"] = float(np.mean(pred[C.SCORE.name]))
    return out


def before_after(args, model, split: dict, out_dir: Path) -> dict:
    """Score the start checkpoint and the fine-tuned model on the split's test subjects; write the report."""
    from avpenet import data
    from avpenet.model import load_model

    clips = data.load_clips(args.data, split["test"], progress=not args.quiet)
    for c in clips:
        c.track = None
    before = _metrics(load_model(args.init).model, clips, args.modality)
    after = _metrics(model.eval(), clips, args.modality)
    report = {
        "init": str(args.init),
        "frozen": list(frozen_parts(args.freeze)),
        "lr": learning_rate(args),
        "test_subjects": len(split["test"]),
        "test_clips": len(clips),
        "test_label_mean": float(np.mean([c.score for c in clips])) if clips else None,
        "before": before,
        "after": after,
    }
    replace_text(out_dir / REPORT_FILE, json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(format_report(report), flush=True)
    return report


def format_report(report: dict) -> str:
    """The before/after table printed at the end of a fine-tuning run."""
    rows = [
        f"held-out test subjects of this dataset: {report['test_subjects']} "
        f"({report['test_clips']} clips, mean label {report['test_label_mean']:.2f})",
        f"{'':<22}{'before':>10}{'after':>10}",
    ]
    for key, label in (
        ("mae", "MAE"),
        ("pearson_r", "Pearson r"),
        ("accuracy_3class", "3-class accuracy"),
        ("interval_coverage_90", "90% interval cover"),
        ("mean_score", "mean score"),
    ):
        b, a = report["before"].get(key, float("nan")), report["after"].get(key, float("nan"))
        rows.append(f"{label:<22}{b:>10.3f}{a:>10.3f}")
    return "\n".join(rows)
