"""The exported fp32 graphs against another precision per part, measured as the served model stage runs.

What `avpenet quantize` prints for its int8 graphs, and `python -m ensemble.precision_measure --choose
audio_frontend=fp32-dft --data DATA --evaluate DATA` for the frontend's fp32-DFT graph. A choice is
{part: precision} (precision.PRECISIONS); "fp32" below is every part's model.onnx (the frontend's DFT in
float64 inside).

Speed: each part's ONNX Runtime session with ONE intra-op thread and no spinning (its cost per core: under
load every core holds some stub's work, so a session's own parallelism is not what the box gains), on the
request shapes the server sees - 1, 8 and 32 stacked one-window requests (the model mix, as the dynamic
batcher stacks them) and one 60-s clip of 58 windows (the long mix: its sound crosses once and the
frontend cuts the windows). Each part's fp32 and chosen sessions alternate run by run, so the load of a
shared machine slows both alike; medians per part, the chain as their sum. When the frontend is not chosen,
its share of the chain bounds what the other parts can win.

Accuracy: the headline path of docs/EVALUATION.md - tracked video of the test subjects (evaluate_paths'
rows and reader, the split `avpenet evaluate` picks) - scored by the fp32 graphs, by each chosen part alone
and by every chosen part together; the clips are read once and scored by each chain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_int
from avpenet.durable import replace_text
from avpenet.user_errors import exit_code
from ensemble import configs, precision
from ensemble.ort_chain import OrtChain

BATCHES = (1, 8, 32)  # stacked one-window requests (model mix)
LONG_WINDOWS = 58  # a 60-s clip (long mix)
ROUNDS = 15


def chain_of(repo: Path, chosen: Mapping[str, str], threads: int | None = None) -> OrtChain:
    """The four graphs of the newest versions: each part at its `chosen` precision, the rest fp32."""
    graphs = {p.name: configs.ONNX_FILES[chosen.get(p.name, "fp32")] for p in contract.PARTS}
    return OrtChain(repo, threads=threads, graphs=graphs)


def stage_requests(
    tensors: dict[str, np.ndarray], batches: tuple[int, ...] = BATCHES
) -> dict[str, dict[str, np.ndarray]]:
    """{shape name: ensemble request}: `batches` one-window requests stacked, and one long clip whose sound
    is rebuilt from consecutive windows' first hops (real audio, laid once over its rows)."""
    from avpenet.features.audio import clip_rows

    n = len(tensors[contract.WAVEFORM.name])
    out: dict[str, dict[str, np.ndarray]] = {}
    for b in batches:
        idx = np.arange(b) % n
        out[f"{b} window{'s' * (b > 1)}"] = {k: np.ascontiguousarray(v[idx]) for k, v in tensors.items()}
    idx = np.arange(LONG_WINDOWS + 2) % n
    wave = tensors[contract.WAVEFORM.name][idx, : contract.HOP_SAMPLES].reshape(-1)
    audio, gains = clip_rows(wave, LONG_WINDOWS)
    rows = {k: np.ascontiguousarray(v[idx[:LONG_WINDOWS]]) for k, v in tensors.items()}
    rows.pop(contract.WAVEFORM.name)
    out[f"{LONG_WINDOWS}-window clip"] = {
        **rows,
        contract.AUDIO.name: audio,
        contract.WINDOW_GAIN.name: gains,
    }
    return out


def _timed_ms(session, names: list[str], inputs: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(names, inputs)
    return 1000.0 * (time.perf_counter() - start)


def stage_ms(
    repo: Path, chosen: Mapping[str, str], tensors: dict, rounds: int = ROUNDS, shapes: tuple[str, ...] = ()
) -> dict:
    """{shape: {"fp32"|"chosen": {part: median ms, "chain": sum of the parts' medians}, "speedup": x}} for
    the `shapes` of stage_requests (default all). Each part's fp32 and chosen sessions run back to back, in
    alternating order, on the same inputs (every tensor of one fp32 pass), so a burst of load elsewhere
    lands on both; the chain is the sum of its parts' medians (steadier than a median of noisy totals)."""
    chains = {"fp32": chain_of(repo, {}, threads=1), "chosen": chain_of(repo, chosen, threads=1)}
    report: dict[str, dict] = {}
    for shape, request in stage_requests(tensors).items():
        if shapes and shape not in shapes:
            continue
        feeds = chains["fp32"].all_tensors(request)
        row: dict = {"fp32": {}, "chosen": {}}
        for i, spec in enumerate(contract.PARTS):
            names = [t.name for t in spec.outputs]
            inputs = {t.name: feeds[t.name] for t in spec.inputs}
            sessions = {name: chain.parts[i][1] for name, chain in chains.items()}
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for session in sessions.values():
                session.run(names, inputs)  # warm-up
            for r in range(rounds):
                for name in ("fp32", "chosen") if r % 2 == 0 else ("chosen", "fp32"):
                    times[name].append(_timed_ms(sessions[name], names, inputs))
            for name, t in times.items():
                row[name][spec.name] = statistics.median(t)
        for name in ("fp32", "chosen"):
            row[name]["chain"] = sum(row[name].values())
        row["speedup"] = row["fp32"]["chain"] / row["chosen"]["chain"]
        frontend = contract.AUDIO_FRONTEND.name
        row["speedup_without_frontend"] = (row["fp32"]["chain"] - row["fp32"][frontend]) / (
            row["chosen"]["chain"] - row["chosen"][frontend]
        )
        row["frontend_share_fp32"] = row["fp32"][frontend] / row["fp32"]["chain"]
        report[shape] = row
    return report


class ChainModel:
    """An OrtChain called like avpenet.model.AVPENet: what avpenet's evaluation code runs."""

    def __init__(self, chain: OrtChain) -> None:
        self.chain = chain

    def eval(self) -> ChainModel:
        return self

    def num_params(self) -> int:
        return 0

    def __call__(self, *tensors):
        import torch

        names = [t.name for t in contract.MODEL_INPUTS]
        inputs = {n: np.ascontiguousarray(x.numpy()) for n, x in zip(names, tensors, strict=True)}
        return {k: torch.from_numpy(v) for k, v in self.chain(inputs).items()}


def settings_of(chosen: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """fp32, each chosen part alone at its precision, and all of them together (when more than one)."""
    out: dict[str, dict[str, str]] = {"fp32": {}, **{f"{p} {v}": {p: v} for p, v in chosen.items()}}
    if len(chosen) > 1:
        out["all chosen"] = dict(chosen)
    return out


VideoRows = tuple[list[dict[str, str]], set[str]]  # (labels rows of the video clips, the test subjects)


def video_rows(data_dir: Path) -> VideoRows:
    """The reference's test subjects' video clips of an --evaluate set; ValueError when there are none,
    checked before minutes of timing or writing versions (then handed to `video_path`)."""
    from avpenet import data
    from avpenet.evaluate import choose_subjects
    from avpenet.evaluate_paths import path_row
    from avpenet.model import CONFIG_FILE, REFERENCE_DIR

    config = json.loads((REFERENCE_DIR / CONFIG_FILE).read_text())
    rows = data.read_labels(data_dir)
    args = argparse.Namespace(data=Path(data_dir), checkpoint=REFERENCE_DIR, split=None)
    subjects, source = choose_subjects(args, config, rows)
    keep = set(subjects)
    picked = [r for row in rows if row["subject_id"] in keep and (r := path_row(row, "video")) is not None]
    if not picked:  # numpy would say only "need at least one array to concatenate"
        raise ValueError(
            f"--evaluate {data_dir} has no video clips of the test subjects (from {source}): "
            "give a rendered dataset (avpenet synth --render-video all)"
        )
    return picked, keep


def video_path(repo: Path, data_dir: Path, chosen: Mapping[str, str], rows: VideoRows) -> dict[str, dict]:
    """{setting: video-path metrics on the test subjects + mae_change vs fp32}: EVALUATION.md's headline."""
    from avpenet import data
    from avpenet.evaluate_paths import subject_ci
    from avpenet.model import REFERENCE_DIR, load_model
    from avpenet.predict import concat_inputs, predict_clips, regression_metrics
    from avpenet.train import restrict

    ckpt = load_model(REFERENCE_DIR)
    modality = ckpt.config.get("modality", "both")
    picked, keep = rows
    clips = [data.load_clip(data_dir, r, keep_track=False) for r in picked]
    inputs = [restrict(dict(c.inputs), modality) for c in clips]
    true = np.array([c.score for c in clips])
    who = [c.subject_id for c in clips]
    windows = concat_inputs(inputs)
    out: dict[str, dict] = {}
    fp32_windows = None
    for name, setting in settings_of(chosen).items():
        chain = chain_of(repo, setting)
        pred = predict_clips(ChainModel(chain), inputs)[contract.SCORE.name]
        row = {**regression_metrics(pred, true), **subject_ci(pred, true, who)}
        row.update(n_clips=len(clips), n_subjects=len(keep))
        scores = _window_scores(chain, windows)  # per window: what the parity tests compare
        fp32_windows = scores if fp32_windows is None else fp32_windows
        diff = np.abs(scores - fp32_windows)
        row.update(n_windows=int(diff.size), window_score_max_abs_diff=float(diff.max()))
        row["window_score_p99_abs_diff"] = float(np.percentile(diff, 99))
        row["mae_change"] = row["mae"] / (out["fp32"]["mae"] if out else row["mae"]) - 1.0
        out[name] = row
    return out


def _window_scores(chain: OrtChain, windows: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    n = len(windows[contract.AGE_GROUP.name])
    parts = [chain({k: v[i : i + batch] for k, v in windows.items()}) for i in range(0, n, batch)]
    return np.concatenate([p[contract.SCORE.name].reshape(-1) for p in parts])


def print_report(stage: dict | None, accuracy: dict | None) -> None:
    """The timing and accuracy tables, as docs/EVALUATION.md and ensemble/README.md quote them."""
    if stage:
        print("model stage, 1 intra-op thread, median ms (fp32 -> chosen):")
        for shape, row in stage.items():
            cells = ", ".join(
                f"{p.name} {row['fp32'][p.name]:.1f}->{row['chosen'][p.name]:.1f}" for p in contract.PARTS
            )
            print(f"  {shape:<16} chain {row['fp32']['chain']:.1f} -> {row['chosen']['chain']:.1f} ms "
                  f"({row['speedup']:.2f}x; without the frontend {row['speedup_without_frontend']:.2f}x; "
                  f"frontend {100 * row['frontend_share_fp32']:.0f}% of fp32): "
                  f"{cells}")  # fmt: skip
    if accuracy:
        print("video path, test subjects (MAE, change vs fp32):")
        for name, row in accuracy.items():
            acc = 100 * row["accuracy_3class"]
            print(f"  {name:<22} MAE {row['mae']:.4f} ({100 * row['mae_change']:+.2f}%), r "
                  f"{row['pearson_r']:.4f}, acc {acc:.1f}% on {row['n_clips']} clips; window scores vs "
                  f"fp32: max {row['window_score_max_abs_diff']:.2g}, "
                  f"p99 {row['window_score_p99_abs_diff']:.2g} ({row['n_windows']} windows)")  # fmt: skip


def parse_choice(text: str) -> dict[str, str]:
    """ "part=precision,..." -> {part: precision} other than fp32 (what is measured against fp32), each
    checked against precision.PRECISIONS."""
    chosen = precision.parse_choice(text, "--choose")
    same = {p: v for p, v in chosen.items() if v == "fp32"}
    if same:
        raise ValueError(f"--choose: {same}; choose part=precision from {precision.PRECISIONS}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    from ensemble import DEFAULT_REPOSITORY
    from ensemble.quantize import DEFAULT_CLIPS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choose", required=True, help="part=precision,... e.g. audio_frontend=fp32-dft")
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--data", type=Path, required=True, help="AVPE-Synth dataset: the timed windows")
    parser.add_argument(
        "--clips", type=positive_int, default=DEFAULT_CLIPS, help="clips whose windows are timed"
    )
    parser.add_argument("--rounds", type=positive_int, default=ROUNDS, help="alternating timing rounds")
    parser.add_argument("--evaluate", type=Path, default=None, help="rendered dataset: video-path accuracy")
    parser.add_argument("--json", type=Path, default=None, help="write the report")
    args = parser.parse_args(argv)
    # e.g. --data without clips: one line and exit 2, as `avpenet` does
    return exit_code("precision_measure", lambda: _measure(args, parse_choice(args.choose)))


def _measure(args: argparse.Namespace, chosen: dict[str, str]) -> int:
    from ensemble.quantize import calibration_windows

    report: dict = {"chosen": chosen}
    rows = video_rows(args.evaluate) if args.evaluate is not None else None
    tensors = calibration_windows(args.data, args.clips)
    report["model_stage_ms"] = stage_ms(args.repo, chosen, tensors, args.rounds)
    if rows is not None:
        report["video_path"] = video_path(args.repo, args.evaluate, chosen, rows)
    print_report(report["model_stage_ms"], report.get("video_path"))
    if args.json is not None:
        replace_text(args.json, json.dumps(report, indent=2, default=float) + "\n")  # never half a report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
