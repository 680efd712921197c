"""`avpenet quantize`: INT8 versions of the encoders (calibrated on AVPE-Synth windows) and the fusion.

The encoders: static QDQ quantisation with onnxruntime.quantization (per-channel int8 weights, uint8
activations whose ranges come from calibration windows run through the fp32 chain). The fusion: dynamic
(activations of its weight MatMuls quantised per call, no calibration; PART_OPTIONS). Dynamic quantisation
of the encoders was measured first and rejected: on this CPU (AVX2, no VNNI) ONNX Runtime's ConvInteger
made the audio encoder ~3x SLOWER; the QDQ graph runs MLAS's int8 convolutions. (The frontend has no weights.)

Each quantised part gets a new version holding both graphs - `model.onnx` (fp32, unchanged) and
`model.int8.onnx` - so the repository's precision choice (ensemble/precision.py) picks the graph per part
without another export, and rolling back is a config change. A new version serves fp32 until it names int8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_int
from avpenet.durable import replace_text
from ensemble import BACKEND_SOURCE, DEFAULT_REPOSITORY, configs, precision, precision_measure, versions
from ensemble.ort_chain import OrtChain
from ensemble.publish import Publication
from ensemble.publish_parts import publish_parts

HELP = (
    "INT8 versions: the encoders quantised statically (calibrated on --data), the fusion dynamically (no "
    "calibration)"
)
INT8_FILE = configs.ONNX_FILES["int8"]
QUANTISABLE = ("audio_encoder", "visual_encoder", "fusion")
# All three are published. The fusion quantises dynamically (the activations of its weight MatMuls are
# quantised per call, no calibration): static QDQ was no faster than fp32 on either CPU measured (AVX2:
# 0.91-1.04x; AVX-512 VNNI: 0.97-1.03x on the part), dynamic 1.10-1.15x on AVX2 and 1.11-1.21x with VNNI
# (ensemble/README.md *INT8 versions*).
DEFAULT_PARTS = QUANTISABLE
CALIBRATION_BATCH = 8  # windows per calibration step
# What each part quantises (chosen on 80 AVPE-Synth clips with the previous weights, MAE change of the clip
# score vs fp32; with the served reference, video path of the test subjects: audio_encoder +0.00%,
# visual_encoder +0.80%, fusion -0.22%, docs/EVALUATION.md *INT8 versions*):
# - audio_encoder: every op but its first convolution, which sees raw log-mel values (int8 there: +3.5% MAE;
#   kept fp32: +0.01%; with the served reference, int8 there: +3.7% video-path MAE and SLOWER, 71 vs 49 ms
#   on 32 windows at 1 thread);
# - fusion: only MatMul/Gemm with constant weights, dynamic; attention's activation x activation products,
#   softmax and layer norms stay fp32 (every op int8: +22% MAE; weights only: +0.05%);
# - visual_encoder: every op (+0.4%).
PART_OPTIONS: dict[str, dict] = {
    "audio_encoder": {"exclude_first_conv": True},
    "visual_encoder": {},
    "fusion": {
        "dynamic": True,
        "op_types_to_quantize": ["MatMul", "Gemm"],
        "extra_options": {"MatMulConstBOnly": True},
        "exclude_age_head": True,
    },
}
STATIC_METHOD = "onnxruntime static QDQ, per-channel int8 weights, uint8 activations"
DYNAMIC_METHOD = (
    "onnxruntime dynamic, int8 weights of the constant MatMul/Gemm, activations quantised per call"
)
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
    if not chosen:  # numpy would say only "need at least one array to concatenate"
        raise ValueError(f"--data {data_dir} has no clips to calibrate on (its labels.csv lists none)")
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
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(spec, tensors)
    options = dict(PART_OPTIONS.get(spec.name, {}))
    if options.pop("exclude_first_conv", False):
        options["nodes_to_exclude"] = [_first_node(fp32, "Conv")]
    if options.pop("exclude_age_head", False):  # 259 parameters whose output picks an age embedding
        options["nodes_to_exclude"] = _age_head_nodes(fp32)
    dynamic = options.pop("dynamic", False)
    with _no_per_tensor_notes(), tempfile.TemporaryDirectory(prefix="avpenet-quantize-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre))
        if dynamic:
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, **options)
            return out.read_bytes()
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


def not_a_per_tensor_note(record: logging.LogRecord) -> bool:
    """False for onnxruntime's QDQ quantizer's "Axis 1 is out-of-range for weight 'part.norm.weight' with
    rank 1" (a root-logger WARNING per rank-1 LayerNormalization/BatchNormalization scale, per-channel axis
    1 being a Conv weight's): that weight is quantised per tensor, as in every int8 graph measured here, so
    it is no news to a user. True for every other record: any other warning or error still shows."""
    return not (record.module == "qdq_quantizer" and "is out-of-range for weight" in record.getMessage())


@contextlib.contextmanager
def _no_per_tensor_notes() -> Iterator[None]:
    logging.getLogger().addFilter(not_a_per_tensor_note)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(not_a_per_tensor_note)


def _first_node(graph: bytes, op_type: str) -> str:
    """Name of the first node of `op_type` in a graph (nodes are stored in topological order)."""
    import onnx

    for node in onnx.load_from_string(graph).graph.node:
        if node.op_type == op_type:
            return node.name
    raise ValueError(f"the graph has no {op_type} node")


def _age_head_nodes(graph: bytes) -> list[str]:
    """The nodes of the fusion's age head (model.Fusion.age_head), kept fp32: its Gemm, and the MatMul that
    dynamic quantisation rewrites a Gemm into first (named `<Gemm>_MatMul`)."""
    import onnx

    names = [n.name for n in onnx.load_from_string(graph).graph.node if "/age_head/" in n.name]
    return [*names, *(f"{name}_MatMul" for name in names)]


def _max_diff(spec: contract.ModelSpec, graphs: tuple[bytes, bytes], tensors: dict[str, np.ndarray]) -> float:
    import onnxruntime as ort

    feeds = {t.name: tensors[t.name] for t in spec.inputs}
    names = [t.name for t in spec.outputs]
    outs = [ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(names, feeds) for g in graphs]
    return max(float(np.max(np.abs(a - b))) for a, b in zip(*outs, strict=True))


def quantize_repository(
    repo: Path,
    tensors: dict[str, np.ndarray],
    parts: tuple[str, ...] = QUANTISABLE,
    calibration: dict | None = None,
    keep: int = versions.DEFAULT_KEEP,
) -> dict[str, dict]:
    """Add an int8 graph beside the fp32 one as a new version of each part; returns {part: version info}.

    `tensors` are ensemble inputs (one row per window); the fp32 chain turns them into every part's inputs.
    """
    # all or nothing, as `avpenet export`: pruned as it prunes, the ensemble's record and the configs last.
    # Locked from the read of each newest fp32 graph on: an export landing meanwhile would otherwise be
    # followed by an int8 version of the graph it replaced (repository_lock.py)
    with Publication(repo) as tx:
        made, int8_rows = _quantized_parts(repo, tensors, parts, calibration)
        report = publish_parts(tx, Path(repo), made, keep)
    return {name: {**row, **int8_rows[name]} for name, row in report.items()}


def _quantized_parts(
    repo: Path, tensors: dict[str, np.ndarray], parts: tuple[str, ...], calibration: dict | None
) -> tuple[list, dict[str, dict]]:
    """(what publish_parts publishes, {part: its int8 record}) for the newest version of each of `parts`."""
    fp32_chain = OrtChain(repo, graphs={p.name: "model.onnx" for p in contract.PARTS})
    values = fp32_chain.all_tensors(tensors)
    made, int8_rows = [], {}  # every part quantised before any is published
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
        dynamic = PART_OPTIONS[spec.name].get("dynamic", False)
        manifest["int8"] = int8_rows[spec.name] = {
            "file": INT8_FILE,
            "method": DYNAMIC_METHOD if dynamic else STATIC_METHOD,
            "calibration": "none: ranges taken per call"
            if dynamic
            else calibration or {"windows": int(len(tensors[contract.WAVEFORM.name]))},
            "max_abs_diff_vs_fp32_on_calibration": _max_diff(spec, (fp32, int8), values),
            "quantized_from_version": current,
        }
        files = {"model.onnx": fp32, INT8_FILE: int8, "model.py": BACKEND_SOURCE.read_bytes()}
        made.append((spec, files, manifest))
    return made, int8_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help="AVPE-Synth set: encoder calibration windows"
    )
    parser.add_argument(
        "--repo", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: %(default)s)"
    )
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help="comma list (default: %(default)s)")
    parser.add_argument(
        "--clips", type=positive_int, default=DEFAULT_CLIPS, help="calibration clips (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="add no version: time (and --evaluate) the int8 graphs the newest versions already hold",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=precision_measure.ROUNDS,
        help="alternating timing rounds (%(default)s)",
    )
    parser.add_argument(
        "--evaluate",
        type=Path,
        default=None,
        help="rendered dataset: video-path MAE of its test subjects, fp32 vs each part int8 vs all",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the quantisation and evaluation report"
    )


def _check_calibration(parts: tuple[str, ...], n_windows: int, args: argparse.Namespace) -> None:
    """ValueError (exit 2) when a statically quantised part would get no calibration batch, before anything
    is written: onnxruntime would only say "No data is collected"."""
    static = [p for p in parts if not PART_OPTIONS[p].get("dynamic", False)]
    if static and not args.measure_only and n_windows < CALIBRATION_BATCH:
        raise ValueError(
            f"the calibration clips of --data {args.data} give {n_windows} window(s); calibrating "
            f"{', '.join(static)} takes {CALIBRATION_BATCH} or more: raise --clips or use a larger dataset"
        )


def run(args: argparse.Namespace) -> int:
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(parts) - set(QUANTISABLE)
    if unknown:  # a user error: exit 2 with one line (cli/main.py), as every command
        raise ValueError(f"--parts: cannot quantise {', '.join(sorted(unknown))}; choose from {QUANTISABLE}")
    repo = Path(args.repo)
    # an --evaluate set without video is refused before versions are written, not after
    rows = precision_measure.video_rows(args.evaluate) if args.evaluate is not None else None
    tensors = calibration_windows(args.data, args.clips, args.seed)
    _check_calibration(parts, len(tensors[contract.WAVEFORM.name]), args)
    calibration = {"data": str(args.data), "clips": args.clips, "seed": args.seed,
                   "windows": int(len(tensors[contract.WAVEFORM.name]))}  # fmt: skip
    report: dict = {
        "versions": {} if args.measure_only else quantize_repository(repo, tensors, parts, calibration)
    }
    for name, row in report["versions"].items():
        state = "new" if row["created"] else "unchanged"
        print(f"  {name:<16} version {row['version']} ({state}), max |int8 - fp32| on the calibration "
              f"windows {row['max_abs_diff_vs_fp32_on_calibration']:.4f}")  # fmt: skip
    if report["versions"]:  # made, not yet served: the repository's precision choice decides (precision.py)
        made = {name: row["version"] for name, row in report["versions"].items()}
        print(precision.int8_note(repo, made, str(args.repo)))
    chosen = {part: "int8" for part in parts}
    report["model_stage_ms"] = precision_measure.stage_ms(repo, chosen, tensors, args.rounds)
    if rows is not None:
        report["video_path"] = precision_measure.video_path(repo, args.evaluate, chosen, rows)
    precision_measure.print_report(report["model_stage_ms"], report.get("video_path"))
    if args.json is not None:
        replace_text(args.json, json.dumps(report, indent=2, default=float) + "\n")  # never half a report
    return 0
