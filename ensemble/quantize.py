"""`avpenet quantize`: INT8 versions of the encoders and the fusion, calibrated on AVPE-Synth windows.

Static QDQ quantisation with onnxruntime.quantization (per-channel int8 weights, uint8 activations whose
ranges come from calibration windows run through the fp32 chain). Dynamic quantisation was measured first
and rejected: on this CPU (AVX2, no VNNI) ONNX Runtime's ConvInteger made the audio encoder ~3x SLOWER;
the QDQ graph runs MLAS's int8 convolutions. The frontend stays fp32: its fp64 DFT keeps log-mel parity.

Each quantised part gets a new version holding both graphs - `model.onnx` (fp32, unchanged) and
`model.int8.onnx` - so the serving config chooses the precision per part (ensemble/precision.json, read by
configs.py into each config's `onnx_file`) without another export, and rolling back is a config change.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avpenet import contract
from ensemble import BACKEND_SOURCE, DEFAULT_REPOSITORY, configs, versions
from ensemble.ort_chain import OrtChain

HELP = "INT8 versions of the encoders and fusion (static ONNX Runtime quantisation, calibrated on data)."
INT8_FILE = "model.int8.onnx"
QUANTISABLE = ("audio_encoder", "visual_encoder", "fusion")
CALIBRATION_BATCH = 8  # windows per calibration step
# What each part quantises (measured on 80 AVPE-Synth clips, MAE change of the clip score vs fp32):
# - audio_encoder: every op but its first convolution, which sees raw log-mel values (int8 there: +3.5% MAE;
#   kept fp32: +0.01%);
# - fusion: only MatMul/Gemm with constant weights; attention's activation x activation products, softmax and
#   layer norms stay fp32 (every op int8: +22% MAE; weights only: +0.05%);
# - visual_encoder: every op (+0.4%).
PART_OPTIONS: dict[str, dict] = {
    "audio_encoder": {"exclude_first_conv": True},
    "visual_encoder": {},
    "fusion": {"op_types_to_quantize": ["MatMul", "Gemm"], "extra_options": {"MatMulConstBOnly": True}},
}
DEFAULT_CLIPS = 48


def calibration_windows(data_dir: Path, n_clips: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ensemble inputs of `n_clips` clips drawn (seeded) from the dataset's training subjects when it has a
    split, else from all of it: the windows whose activations set the int8 ranges."""
    from avpenet import data

    rows = data.read_labels(data_dir)
    split = Path(data_dir) / data.SPLIT_FILE
    if split.exists():
        train = set(data.read_split(split)["train"])
        rows = [r for r in rows if r["subject_id"] in train] or rows
    rng = np.random.default_rng(seed)
    chosen = [rows[i] for i in rng.permutation(len(rows))[:n_clips]]
    clips = [data.load_clip(data_dir, r) for r in chosen]
    return {t.name: np.concatenate([c.inputs[t.name] for c in clips]) for t in contract.MODEL_INPUTS}


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over one part's input tensors, in small batches."""

    def __init__(self, spec: contract.ModelSpec, tensors: dict[str, np.ndarray]) -> None:
        n = len(tensors[spec.inputs[0].name])
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [
                {
                    t.name: np.ascontiguousarray(tensors[t.name][i : i + CALIBRATION_BATCH])
                    for t in spec.inputs
                }
                for i in range(0, n - CALIBRATION_BATCH + 1, CALIBRATION_BATCH)  # equal batches: histograms
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_part(fp32: bytes, spec: contract.ModelSpec, tensors: dict[str, np.ndarray]) -> bytes:
    """The int8 QDQ graph of one part, calibrated on `tensors` (every tensor of the fp32 chain)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(spec, tensors)
    options = dict(PART_OPTIONS.get(spec.name, {}))
    if options.pop("exclude_first_conv", False):
        options["nodes_to_exclude"] = [_first_node(fp32, "Conv")]
    with tempfile.TemporaryDirectory(prefix="avpenet-quantize-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            **options,
        )
        return out.read_bytes()


def _first_node(graph: bytes, op_type: str) -> str:
    """Name of the first node of `op_type` in a graph (nodes are stored in topological order)."""
    import onnx

    for node in onnx.load_from_string(graph).graph.node:
        if node.op_type == op_type:
            return node.name
    raise ValueError(f"the graph has no {op_type} node")


def _max_diff(spec: contract.ModelSpec, graphs: tuple[bytes, bytes], tensors: dict[str, np.ndarray]) -> float:
    import onnxruntime as ort

    feeds = {t.name: tensors[t.name] for t in spec.inputs}
    names = [t.name for t in spec.outputs]
    outs = [ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(names, feeds) for g in graphs]
    return max(float(np.max(np.abs(a - b))) for a, b in zip(*outs, strict=True))


def timed_ms(
    graphs: tuple[bytes, ...], spec: contract.ModelSpec, tensors: dict, rounds: int = 7
) -> list[float]:
    """Median ms per run of each graph on the same 32 windows, runs interleaved so a busy (shared) machine
    slows every graph alike; the ratio is the figure to trust, not the absolute times."""
    import statistics
    import time

    import onnxruntime as ort

    feeds = {t.name: np.ascontiguousarray(tensors[t.name][:32]) for t in spec.inputs}
    names = [t.name for t in spec.outputs]
    sessions = [ort.InferenceSession(g, providers=["CPUExecutionProvider"]) for g in graphs]
    times: list[list[float]] = [[] for _ in graphs]
    for session in sessions:
        session.run(names, feeds)
    for _ in range(rounds):
        for session, out in zip(sessions, times, strict=True):
            start = time.perf_counter()
            session.run(names, feeds)
            out.append(1000.0 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def quantize_repository(
    repo: Path,
    tensors: dict[str, np.ndarray],
    parts: tuple[str, ...] = QUANTISABLE,
    calibration: dict | None = None,
) -> dict[str, dict]:
    """Add an int8 graph beside the fp32 one as a new version of each part; returns {part: version info}.

    `tensors` are ensemble inputs (one row per window); the fp32 chain turns them into every part's inputs.
    """
    fp32_chain = OrtChain(repo, graphs={p.name: "model.onnx" for p in contract.PARTS})
    values = fp32_chain.all_tensors(tensors)
    report: dict[str, dict] = {}
    for spec in contract.PARTS:
        if spec.name not in parts:
            continue
        model_dir = repo / spec.name
        current = versions.latest(model_dir)
        fp32 = (model_dir / str(current) / "model.onnx").read_bytes()
        int8 = quantize_part(fp32, spec, values)
        previous = versions.read_manifest(model_dir, current)
        manifest = {
            key: previous[key] for key in ("source", "onnx_opset", "inputs", "outputs") if key in previous
        }
        manifest["int8"] = {
            "file": INT8_FILE,
            "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations",
            "calibration": calibration or {"windows": int(len(tensors[contract.WAVEFORM.name]))},
            "max_abs_diff_vs_fp32_on_calibration": _max_diff(spec, (fp32, int8), values),
            "ms_per_32_windows_fp32_int8": [round(t, 2) for t in timed_ms((fp32, int8), spec, values)],
            "quantized_from_version": current,
        }
        files = {"model.onnx": fp32, INT8_FILE: int8, "model.py": BACKEND_SOURCE.read_bytes()}
        version, created = versions.add_version(model_dir, files, manifest)
        report[spec.name] = {"version": version, "created": created, **manifest["int8"]}
    configs.write_configs(repo)
    return report


class ChainModel:
    """An OrtChain called like avpenet.model.AVPENet: what avpenet.evaluate.evaluate runs."""

    def __init__(self, chain: OrtChain, params: int) -> None:
        self.chain, self.params = chain, params

    def eval(self) -> ChainModel:
        return self

    def num_params(self) -> int:
        return self.params

    def __call__(self, *tensors):
        import torch

        names = [t.name for t in contract.MODEL_INPUTS]
        inputs = {n: np.ascontiguousarray(x.numpy()) for n, x in zip(names, tensors, strict=True)}
        return {k: torch.from_numpy(v) for k, v in self.chain(inputs).items()}


def chain_ms(repo: Path, parts: tuple[str, ...], tensors: dict, rounds: int = 7) -> dict[str, float]:
    """The whole model stage (every part, the chosen ones at int8) on 32 windows: interleaved medians."""
    import statistics
    import time

    feeds = {k: v[:32] for k, v in tensors.items()}
    chains = {
        name: OrtChain(repo, graphs={p: INT8_FILE if p in int8 else "model.onnx" for p in QUANTISABLE})
        for name, int8 in (("fp32", ()), ("int8", parts))
    }
    times: dict[str, list[float]] = {name: [] for name in chains}
    for chain in chains.values():
        chain(feeds)
    for _ in range(rounds):
        for name, chain in chains.items():
            start = time.perf_counter()
            chain(feeds)
            times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def evaluate_precisions(repo: Path, data_dir: Path, parts: tuple[str, ...]) -> dict[str, dict]:
    """`avpenet evaluate`'s figures for the fp32 graphs and for `parts` at int8, on the same clips."""
    from avpenet.evaluate import evaluate
    from avpenet.model import REFERENCE_DIR

    args = argparse.Namespace(
        data=Path(data_dir), checkpoint=REFERENCE_DIR, split=None, seed=0, batch_size=64, quiet=True
    )
    out = {}
    for name, int8_parts in (("fp32", ()), ("int8", parts)):
        graphs = {p.name: INT8_FILE if p.name in int8_parts else "model.onnx" for p in contract.PARTS}
        chain = ChainModel(OrtChain(repo, graphs=graphs), params=0)
        result = evaluate(args, model=chain)
        out[name] = {k: result[k] for k in ("n_clips", "fusion", "audio_only", "visual_only", "by_age")}
    fp32, int8 = out["fp32"]["fusion"]["mae"], out["int8"]["fusion"]["mae"]
    out["fusion_mae_change"] = int8 / fp32 - 1.0
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="AVPE-Synth dataset for calibration windows")
    parser.add_argument(
        "--repo", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: %(default)s)"
    )
    parser.add_argument("--parts", default=",".join(QUANTISABLE), help="comma list (default: %(default)s)")
    parser.add_argument(
        "--clips", type=int, default=DEFAULT_CLIPS, help="calibration clips (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--evaluate",
        type=Path,
        default=None,
        help="dataset to judge fp32 vs int8 on (avpenet evaluate's code)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the quantisation and evaluation report"
    )


def run(args: argparse.Namespace) -> int:
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(parts) - set(QUANTISABLE)
    if unknown:
        raise SystemExit(f"avpenet quantize: cannot quantise {sorted(unknown)}; choose from {QUANTISABLE}")
    tensors = calibration_windows(args.data, args.clips, args.seed)
    calibration = {"data": str(args.data), "clips": args.clips, "seed": args.seed,
                   "windows": int(len(tensors[contract.WAVEFORM.name]))}  # fmt: skip
    report = quantize_repository(Path(args.repo), tensors, parts, calibration)
    report["model_stage_ms_per_32_windows"] = chain_ms(Path(args.repo), parts, tensors)
    if args.evaluate is not None:
        report["evaluation"] = evaluate_precisions(Path(args.repo), args.evaluate, parts)
    for name, row in report.items():
        if name in ("evaluation", "model_stage_ms_per_32_windows"):
            continue
        state = "new" if row["created"] else "unchanged"
        fp32_ms, int8_ms = row["ms_per_32_windows_fp32_int8"]
        print(f"  {name:<16} version {row['version']} ({state}): 32 windows {fp32_ms:.0f} ms fp32, "
              f"{int8_ms:.0f} ms int8 ({fp32_ms / int8_ms:.2f}x)")  # fmt: skip
    print(f"serve int8 per part: ensemble/{configs.PRECISION_PATH.name}, then `avpenet export` (configs)")
    stage = report["model_stage_ms_per_32_windows"]
    print(f"model stage, 32 windows: {stage['fp32']:.0f} ms fp32, {stage['int8']:.0f} ms with the int8 parts "
          f"({stage['fp32'] / stage['int8']:.2f}x)")  # fmt: skip
    if "evaluation" in report:
        e = report["evaluation"]
        print(f"fusion MAE on {e['fp32']['n_clips']} clips: fp32 {e['fp32']['fusion']['mae']:.4f}, int8 "
              f"{e['int8']['fusion']['mae']:.4f} ({100 * e['fusion_mae_change']:+.2f}%)")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0
