"""`avpenet evaluate`: judge a checkpoint on unseen subjects, with robustness and calibration figures.

    avpenet evaluate --data DIR [--checkpoint RUN_DIR] --json OUT.json [--report REPORT_DIR] [--part val]

Clips of the test subjects only: --split, DIR/split.json, or the checkpoint's own split when DIR is the
dataset it was trained on (same labels.csv digest) or another render of its plan (DIR/plan.json, e.g.
`avpenet synth --parts val`: the same subjects); otherwise every subject is unseen test data. `--part val`
judges that split's validation subjects instead, the ones candidates are chosen on (figures, no verdicts).
A clip's score is the mean of its windows' scores (``aggregate.aggregate_windows``, as the gateway serves it;
windows with neither modality left out).
Figures, under stable JSON keys:
- ``fusion``, ``audio_only``, ``visual_only`` (the same model with the other modality masked as absent),
  ``audio_only_trained``/``visual_only_trained`` (single-modality models trained alone, when the checkpoint
  directory holds ``audio_only/`` and ``visual_only/`` runs): mae, rmse, pearson_r, icc, accuracy_3class,
  macro_f1, n, label_noise_floor_mae;
- ``by_age.neonate`` / ``by_age.adult``: the fusion figures per age group;
- ``by_skin_tone`` (a set rendered with ``avpenet synth --skin-tone``): the fusion figures per skin tone its
  subjects wear, keyed as --skin-tone names them ("photo", "6", ...);
- ``robustness``: per condition (clean, hospital noise at SNR 20/10/5/0 dB, lower face occluded, audio
  missing, face missing) the figures and ``mae_change`` relative to clean;
- ``interval_coverage_90``: share of clips whose label lies in the served 90% interval;
- ``label_noise_floor_mae``: MAE of the rater-median label against the latent pain (DIR/truth.csv, synthetic
  data only; null otherwise) — what outputting the latent pain would score (not a floor, docs/DATA.md);
- ``machines``: ``evaluated_on`` (this machine: CPU, vector flags, torch, onnxruntime) and ``tracked_on``
  ({machine: clips}: which rendered and tracked the videos scored, from their stamps; avpenet/machine.py);
- ``part``: "test", or "val" (`--part val`), whose targets all get ``not_judged`` (targets.VALIDATION_PART);
- ``targets``: each accuracy target the model is held to (avpenet.targets), with the measured figure and
  whether it is met; ``met`` is null, with ``not_judged`` saying why, when nothing was measured or the set
  has too few test subjects to judge it (MIN_TEST_SUBJECTS, per age group MIN_AGE_GROUP_SUBJECTS).

Why one module over 300 lines: one evaluation procedure (which subjects, which conditions, which targets)
whose JSON keys are listed above.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet import data, machine
from avpenet.age_inference import inferred_age_accuracy  # how often the age read from a clip is right
from avpenet.argtypes import positive_int
from avpenet.durable import replace_text
from avpenet.model import REFERENCE_DIR, load_model
from avpenet.predict import predict_clips, regression_metrics, with_age
from avpenet.targets import SINGLE_MODALITY_DIRS, judge_targets, unjudged_line
from avpenet.train import mask_audio, mask_face, restrict

HELP = "evaluate a checkpoint on the test subjects of a dataset (metrics JSON + optional Markdown report)"
SNRS_DB = (20.0, 10.0, 5.0, 0.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="dataset directory with labels.csv")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=REFERENCE_DIR,
        help="run directory (default: the committed reference)",
    )
    parser.add_argument("--json", type=Path, required=True, help="where to write the metrics JSON")
    parser.add_argument(
        "--report", type=Path, metavar="REPORT_DIR",
        help="write EVALUATION.md and img/*.png plots into this folder of their own (refused where an "
        "EVALUATION.md it did not write lies, e.g. docs/)",
    )  # fmt: skip
    parser.add_argument(
        "--notes", type=Path, help="Markdown to include in the report (discussion of results)"
    )
    parser.add_argument(
        "--split", type=Path, help="split.json whose test subjects to use (see choose_subjects)"
    )
    parser.add_argument(
        "--part", choices=("test", "val"), default="test",
        help="the split's part to judge: val to choose between candidates (the test subjects never choose), "
        "test (default) for the figures reported",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seeds the added noise and occlusion")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument(
        "--paths", action="store_true",
        help="also judge each input path (video, audio+landmarks, audio, landmarks), subject-bootstrap CIs",
    )  # fmt: skip
    parser.add_argument(
        "--send-age", choices=C.AGE_GROUPS,
        help="score every clip as if this age group were sent (unknown: what a request naming none gets)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true")


def choose_subjects(
    args: argparse.Namespace, config: dict, rows: list[dict[str, str]]
) -> tuple[list[str], str]:
    """Test subjects (`--part val`: validation subjects) of the split data.split_for finds (--split,
    DIR/split.json, or the checkpoint's own when DIR is the data it was trained on or a render of its plan),
    else every subject (unseen data; no validation part to take)."""
    part = getattr(args, "part", "test")
    found = data.split_for(args.data, args.checkpoint, config, getattr(args, "split", None))
    if found is None:
        if part != "test":
            raise ValueError(
                f"--part {part}: no split says which subjects of {args.data} are {part} subjects (give "
                "--split, or a checkpoint trained on this data or on another render of its plan)"
            )
        return sorted({r["subject_id"] for r in rows}), "all subjects (no split.json in the data)"
    path, source, why = found
    return data.read_split(path)[part], f"{source} ({part})" + (f": {why}" if why else "")


def send_age(clips: list[data.Clip], args: argparse.Namespace) -> list[data.Clip]:
    """The clips with `--send-age` as the model's age input (their own age group still groups the metrics);
    unchanged without it."""
    if age := getattr(args, "send_age", None):
        for clip in clips:
            clip.inputs = with_age(clip.inputs, C.age_index(age))
    return clips


def label_noise_floor(data_dir: Path, clips: list[data.Clip]) -> dict[str, float] | None:
    """MAE of the rater-median label vs the latent pain, overall and per age (None without truth.csv)."""
    path = Path(data_dir) / "truth.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        latent = {r["clip_id"]: float(r["latent_pain"]) for r in csv.DictReader(f) if r.get("latent_pain")}
    out: dict[str, float] = {}
    for name, group in (("all", clips), *((a, [c for c in clips if c.age_group == a]) for a in C.AGE_GROUPS)):
        err = [abs(c.score - latent[c.clip_id]) for c in group if c.clip_id in latent]
        if err:
            out[name] = float(np.mean(err))
    return out


class NoiseBank:
    """Random 3 s crops of pre-generated hospital backgrounds (``synth.noise.hospital_noise``); generating
    one per window would cost ~30 ms each, longer than scoring the window."""

    def __init__(self, rng: np.random.Generator, n: int = 64) -> None:
        from avpenet.synth.noise import hospital_noise

        self.rng = rng
        self.bank = np.stack([hospital_noise(2 * C.WINDOW_SAMPLES, rng) for _ in range(n)])

    def window(self) -> np.ndarray:
        row = self.bank[self.rng.integers(len(self.bank))]
        start = self.rng.integers(row.size - C.WINDOW_SAMPLES)
        return row[start : start + C.WINDOW_SAMPLES]


def noisy_inputs(inputs: dict[str, np.ndarray], snr_db: float, noise: NoiseBank) -> dict[str, np.ndarray]:
    """Hospital noise mixed into each present audio window at snr_db (relative to the window's level), then
    re-normalised exactly as the feature code normalises windows."""
    from avpenet.augment import mix_at_snr
    from avpenet.features.audio import normalise_window

    x = dict(inputs)
    waves = x[C.WAVEFORM.name].copy()
    for i in np.flatnonzero(x[C.AUDIO_PRESENT.name][:, 0] > 0.5):
        waves[i] = normalise_window(mix_at_snr(waves[i], noise.window(), snr_db))
    x[C.WAVEFORM.name] = waves
    return x


def occluded_inputs(clip: data.Clip, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The clip with its face track passed through augment.occlude_lower_face (mask/pacifier/hand)."""
    from avpenet.augment import occlude_lower_face
    from avpenet.features.visual import frame_features

    x = dict(clip.inputs)
    if clip.track is None or not clip.track.face_present.any():
        return x
    feats, mask = frame_features(occlude_lower_face(clip.track, rng))
    x[C.VISUAL_FEATURES.name], x[C.FRAME_MASK.name] = data.visual_inputs(feats, mask, clip.n_windows)
    return x


def _masked(inputs: dict[str, np.ndarray], fn) -> dict[str, np.ndarray]:
    x = dict(inputs)
    fn(x)
    return x


def _with_floor(metrics: dict, floor: float | None) -> dict:
    return {**metrics, "label_noise_floor_mae": floor}


def _single_modality_models(args: argparse.Namespace, clips: list, scores: np.ndarray, floor) -> dict:
    """Metrics of the single-modality models trained alone, when the checkpoint carries them."""
    out = {}
    for key, sub in SINGLE_MODALITY_DIRS.items():
        path = Path(args.checkpoint) / sub
        if (path / "config.json").exists():
            single = load_model(path)
            inputs = [restrict(dict(c.inputs), single.config.get("modality", "both")) for c in clips]
            pred = predict_clips(single.model, inputs, args.batch_size)
            out[key] = _with_floor(regression_metrics(pred[C.SCORE.name], scores), floor)
    return out


def _robustness(result: dict, base: list, occluded, score, seed: int) -> dict:
    """Metrics under hospital noise at each SNR, lower-face occlusion and a missing modality, each with its
    change of MAE from clean inputs. `score(inputs)` gives metrics; `occluded(rng)` the occluded inputs."""
    rng = np.random.default_rng(seed)
    noise = NoiseBank(rng)
    clean = result["fusion"]
    robustness = {"clean": clean}
    for snr in SNRS_DB:
        robustness[f"snr_{snr:g}db"] = score([noisy_inputs(x, snr, noise) for x in base])
    robustness["lower_face_occluded"] = score(occluded(rng))
    robustness["audio_missing"] = result["visual_only"]
    robustness["face_missing"] = result["audio_only"]
    for cond in robustness.values():
        cond["mae_change"] = cond["mae"] / clean["mae"] - 1.0
    return robustness


def _by_group(data_dir: Path, clips: list[data.Clip], metrics, floor: dict | None) -> dict:
    """The fusion figures per age group ("by_age"), and per skin tone the subjects wear ("by_skin_tone") in a
    set rendered with --skin-tone: whether darker skin is scored worse is read as the age groups are
    (docs/EVALUATION.md, *Faces*). n_subjects: who judge_targets counts before judging a group's target."""
    from avpenet.synth.dataset import subject_skin_tones
    from avpenet.synth.skin import tone_order

    ages = np.array([c.age_group for c in clips])
    groups = {
        "by_age": {
            age: {
                **_with_floor(metrics(ages == age), None if floor is None else floor.get(age)),
                "n_subjects": len({c.subject_id for c in clips if c.age_group == age}),
            }
            for age in C.LABELLED_AGE_GROUPS
        }
    }
    tones = subject_skin_tones(data.read_plan(data_dir), sorted({c.subject_id for c in clips}))
    if tones is not None:
        worn = np.array([tones[c.subject_id] for c in clips])
        order = sorted(set(tones.values()), key=tone_order)
        groups["by_skin_tone"] = {
            t: {**metrics(worn == t), "n_subjects": sum(v == t for v in tones.values())} for t in order
        }
    return groups


def evaluate(args: argparse.Namespace, model=None) -> dict:
    """`model`: a stand-in called like AVPENet (e.g. the ONNX graphs a repository serves, fp32 or int8, from
    `avpenet quantize --evaluate`); by default the checkpoint's PyTorch model."""
    t0 = time.monotonic()
    ckpt = load_model(args.checkpoint)
    model = ckpt.model if model is None else model
    modality = ckpt.config.get("modality", "both")
    rows = data.read_labels(args.data)
    subjects, split_source = choose_subjects(args, ckpt.config, rows)
    clips = send_age(data.load_clips(args.data, subjects, progress=not args.quiet), args)
    if not clips:
        part = getattr(args, "part", "test")
        raise ValueError(f"no clips of the {part} subjects in {args.data} (subjects from {split_source})")
    scores = np.array([c.score for c in clips])
    ages = np.array([c.age_group for c in clips])
    floor = label_noise_floor(args.data, clips)
    floor_all = None if floor is None else floor.get("all")
    base = [restrict(dict(c.inputs), modality) for c in clips]

    def run(inputs: list[dict[str, np.ndarray]]) -> dict:
        return predict_clips(model, inputs, args.batch_size)

    def metrics(pred: dict, sel: np.ndarray | None = None) -> dict:
        sel = np.ones(len(clips), bool) if sel is None else sel
        return regression_metrics(pred[C.SCORE.name][sel], scores[sel])

    say = (lambda *_: None) if args.quiet else (lambda m: print(m, flush=True))
    say(f"evaluating {len(clips)} clips of {len(subjects)} subjects ({split_source})")
    fusion_pred = run(base)
    result: dict = {
        "n_clips": len(clips),
        "n_subjects": len(subjects),
        "n_windows": int(sum(c.n_windows for c in clips)),
        "params": model.num_params(),
        "checkpoint": str(args.checkpoint),
        "checkpoint_modality": modality,
        "data": str(args.data),
        "test_subjects_from": split_source,
        "part": getattr(args, "part", "test"),  # val: the targets get no verdict (targets.VALIDATION_PART)
        "fusion": _with_floor(metrics(fusion_pred), floor_all),
        "audio_only": _with_floor(metrics(run([_masked(x, mask_face) for x in base])), floor_all),
        "visual_only": _with_floor(metrics(run([_masked(x, mask_audio) for x in base])), floor_all),
    }
    result.update(_single_modality_models(args, clips, scores, floor_all))
    result.update(_by_group(args.data, clips, lambda sel: metrics(fusion_pred, sel), floor))
    if getattr(args, "send_age", None) == "unknown" and float(ckpt.model.fusion.infers_age):
        # the checkpoint's head, which a stand-in's graphs carry too (fp32 in int8 ones, ensemble/quantize.py)
        result["age_inferred"] = inferred_age_accuracy(ckpt.model, base, [c.age_group for c in clips])
    lo, hi = fusion_pred[C.INTERVAL.name][:, 0], fusion_pred[C.INTERVAL.name][:, 1]
    result["interval_coverage_90"] = float(np.mean((scores >= lo) & (scores <= hi)))
    result["interval_mean_width"] = float(np.mean(hi - lo))
    result["label_noise_floor_mae"] = floor_all

    say("robustness: noise, occlusion, missing modality")

    def occluded(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        return [restrict(occluded_inputs(c, rng), modality) for c in clips]

    result["robustness"] = _robustness(result, base, occluded, lambda x: metrics(run(x)), args.seed)
    if getattr(args, "paths", False):
        from avpenet.evaluate_paths import evaluate_paths

        say("input paths: video, audio+landmarks, audio only, landmarks only")
        result["paths"] = evaluate_paths(model, Path(args.data), rows, subjects, modality)
    result["machines"] = {  # the same render tracked or scored on another CPU reads a little differently
        "evaluated_on": machine.describe(machine.SCORING_PACKAGES),
        "tracked_on": machine.count(c.tracked_on for c in clips if c.tracked_on is not None),
    }
    result["targets"] = judge_targets(result)
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result.update(_run_record(ckpt.config))
    result["_predictions"] = {  # for the report; stripped from the JSON
        C.SCORE.name: fusion_pred[C.SCORE.name],
        "true": scores,
        "age": ages,
        C.INTERVAL.name: fusion_pred[C.INTERVAL.name],
        C.MODALITY_WEIGHTS.name: fusion_pred[C.MODALITY_WEIGHTS.name],
    }
    return result


def _run_record(config: dict) -> dict:
    """What the checkpoint says about its training and its interval, for the report (stripped from JSON)."""
    return {
        "_history": config.get("history", []),
        "_training": {k: config.get(k) for k in ("best_epoch", "epochs_run", "stopped", "elapsed_s")},
        "_interval": {  # what the interval's scale was fitted on (train, or `avpenet calibrate`)
            "scale": config.get("interval_scale"),
            "calibration": config.get("interval_calibration"),
        },
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def run(args: argparse.Namespace) -> int:
    from avpenet.labelcheck import LabelsError

    if args.json.is_dir():  # checked before scoring, which takes minutes, not after
        raise ValueError(f"--json {args.json} is a folder; give the file to write")
    if args.notes is not None and not args.notes.is_file():
        raise ValueError(f"--notes {args.notes}: no such file")
    if args.report is not None:
        from avpenet.report import check_overwritable

        check_overwritable(args.report)  # a hand-written EVALUATION.md is refused before minutes of scoring
    try:
        result = evaluate(args)
    except LabelsError as exc:  # bad rows: reported with line numbers, nothing scored
        print(f"avpenet evaluate: {exc}", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all: the last figures stay on a failure (`avpenet export` reads RUN_DIR/metrics.json)
    replace_text(args.json, json.dumps(_jsonable(result), indent=2) + "\n")
    f, a, v = result["fusion"], result["audio_only"], result["visual_only"]
    print(
        f"fusion MAE {f['mae']:.3f} r {f['pearson_r']:.3f} acc {f['accuracy_3class']:.3f} "
        f"on {result['n_clips']} clips; audio-only MAE {a['mae']:.3f}, visual-only {v['mae']:.3f}; "
        f"90% coverage {result['interval_coverage_90']:.3f}; wrote {args.json}"
    )
    m = result["machines"]
    print(f"scored on {m['evaluated_on']}; its videos tracked on: {machine.per_machine(m['tracked_on'])}")
    if line := unjudged_line(result.get("targets", {})):
        print(line)
    if args.report:
        from avpenet.report import write_report

        path = write_report(result, args.report, notes=args.notes)
        print(f"wrote {path}")
    return 0
