"""`avpenet export`: a trained run (or the committed reference) -> the Triton model repository.

Each of the four AVPENet parts becomes an ONNX graph served by the Python backend (ensemble/backend/model.py,
copied beside it), with config.pbtxt + configs/{pod,gpu}.pbtxt from the contract, and the `avpenet` ensemble
chains them. Only parts whose bytes changed get a new version, so a retrained visual encoder is rolled out
alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avpenet import contract
from avpenet.argtypes import positive_int
from ensemble import BACKEND_SOURCE, DEFAULT_REPOSITORY, PROJECT_ROOT, configs, repository_lock, versions
from ensemble.onnx_export import OPSET, export_part
from ensemble.publish import Publication
from ensemble.publish_parts import publish_parts

HELP = "Export a trained run (default: the committed reference) to the Triton model repository."
DEFAULT_SEED = 0
FP32_DFT_FILE = configs.ONNX_FILES["fp32-dft"]
# Log-mel units (natural log of power). Seen: <= 3e-3 in the quietest bands of voiced windows, ~5e-6 on
# average; a wrong graph (a bin or frame out of place) is off by O(1).
FP32_DFT_ATOL = 1e-2


def _display_path(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def load_source(checkpoint: Path | None = None, seed: int = DEFAULT_SEED):
    """(model in eval mode, source record for manifests); falls back to the reference, then a seeded init."""
    import torch

    from avpenet.model import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, REFERENCE_DIR, AVPENet, load_model

    run_dir = Path(checkpoint) if checkpoint is not None else REFERENCE_DIR
    if checkpoint is not None or (run_dir / CHECKPOINT_FILE).exists():
        loaded = load_model(run_dir)
        metrics = loaded.config.get("metrics")
        if metrics is None and (run_dir / METRICS_FILE).exists():
            metrics = json.loads((run_dir / METRICS_FILE).read_text())
        source = {
            "kind": "checkpoint" if checkpoint is not None else "reference",
            "run_dir": _display_path(run_dir),
            "checkpoint_sha256": versions.sha256_file(run_dir / CHECKPOINT_FILE),
            "config_sha256": versions.sha256_file(run_dir / CONFIG_FILE),
            "metrics": metrics,
        }
        return loaded.model, source
    torch.manual_seed(seed)
    model = AVPENet().eval()
    note = "untrained: no --checkpoint and no avpenet/reference/ run; scores are meaningless until trained"
    return model, {"kind": "random-init", "seed": seed, "note": note, "metrics": None}


def model_from_source(source: dict):
    """Rebuild the PyTorch model a manifest's `source` describes (the parity tests compare against it)."""
    if source["kind"] == "random-init":
        import torch

        from avpenet.model import AVPENet

        torch.manual_seed(int(source["seed"]))
        return AVPENet().eval()
    run_dir = Path(source["run_dir"])
    return load_source(run_dir if run_dir.is_absolute() else PROJECT_ROOT / run_dir)[0]


def fp32_dft_frontend() -> tuple[bytes, float]:
    """The frontend graph with its DFT in float32 (no weights: the basis and filters come from the contract),
    and its max |log-mel - the float64 frontend's| on the export's check inputs (bound: FP32_DFT_ATOL)."""
    import torch

    from avpenet.model import AudioFrontend

    fp32, fp64 = AudioFrontend(torch.float32).eval(), AudioFrontend().eval()
    return export_part(fp32, contract.AUDIO_FRONTEND, reference=fp64, atol=FP32_DFT_ATOL)


def export_repository(
    model, repo: Path = DEFAULT_REPOSITORY, source: dict | None = None, keep: int = versions.DEFAULT_KEEP
) -> dict[str, dict]:
    """Write or update `repo` from `model`; returns {model name: {"version", "created", "pruned"}}."""
    source = source or {"kind": "in-memory"}
    backend = BACKEND_SOURCE.read_bytes()
    exported = []  # every part exported and checked before any is published: a part that fails its parity
    for spec in contract.PARTS:  # check must not leave earlier parts at N+1 beside the old fusion
        onnx_bytes, diff = export_part(model.part(spec.name), spec)
        manifest = {
            "source": source,
            "onnx_opset": OPSET,
            "parity_max_abs_diff_torch_vs_onnx": diff,
            "inputs": {t.name: [t.dtype, ["batch", *t.shape]] for t in spec.inputs},
            "outputs": {t.name: [t.dtype, ["batch", *t.shape]] for t in spec.outputs},
        }
        files = {"model.onnx": onnx_bytes, "model.py": backend}
        if spec is contract.AUDIO_FRONTEND:  # the fp32-DFT graph beside it: precision.json chooses
            files[FP32_DFT_FILE], manifest["fp32_dft_max_abs_diff_vs_fp64_torch"] = fp32_dft_frontend()
        exported.append((spec, files, manifest))
    with Publication(repo) as tx:  # all or nothing: a disk error on any part leaves the repository as it was
        report = publish_parts(tx, Path(repo), exported, keep, source)
    # the ensemble's graph only (version 1); its steps use each part's newest version, which its record names
    report[contract.ENSEMBLE.name] = {"version": 1, "created": False, "pruned": []}
    return report


def _same_weights(recorded: dict, source: dict) -> bool:
    digest = recorded.get("checkpoint_sha256")
    return recorded.get("kind") == source["kind"] or (
        digest is not None and digest == source.get("checkpoint_sha256")
    )


def default_source_refusal(repo: Path, source: dict) -> str | None:
    """Why an export without --checkpoint (the reference, or a seeded init: `source`) must not publish into
    `repo`, or None. A repository serving a part exported from a trained run would otherwise get the
    reference's weights as its next version when all that was wanted was a configs-only re-export."""
    for spec in contract.PARTS:
        current = versions.latest(Path(repo) / spec.name)
        recorded = (
            versions.read_manifest(Path(repo) / spec.name, current).get("source", {}) if current else {}
        )
        if recorded and not _same_weights(recorded, source):
            was = " ".join(str(recorded.get(k, "")) for k in ("kind", "run_dir")).strip()
            new = " ".join(str(source.get(k, "")) for k in ("kind", "run_dir")).strip()
            return (
                f"{repo} serves {spec.name} version {current} exported from {was}; without --checkpoint this "
                f"would publish {new} over it. To rewrite the configs only (precision.json, batching.json), "
                f"run `python -m ensemble.configs --repo {repo}`; to publish weights, pass --checkpoint "
                "RUN_DIR (--checkpoint avpenet/reference to go back to the reference)."
            )
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="run directory (model.pt + config.json)"
    )
    parser.add_argument(
        "--repo", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: %(default)s)"
    )
    parser.add_argument(
        "--keep", type=positive_int, default=versions.DEFAULT_KEEP, help="versions kept per part on disk"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random init fallback")


def run(args: argparse.Namespace) -> int:
    import warnings

    import torch

    # The tracer warns about shapes taken as constants; the parity check after export proves the graph.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.checkpoint is not None and not (args.checkpoint / "config.json").exists():
        print(f"avpenet export: {args.checkpoint} is not a run directory (no config.json)", file=sys.stderr)
        return 2
    # one writer at a time, from the refusal's read to the last rename; a second export fails here at once,
    # not after minutes of exporting (repository_lock.py)
    with repository_lock.hold(args.repo):
        model, source = load_source(args.checkpoint, args.seed)
        refusal = None if args.checkpoint is not None else default_source_refusal(args.repo, source)
        if refusal:
            print(f"avpenet export: {refusal}", file=sys.stderr)
            return 2
        report = export_repository(model, args.repo, source, args.keep)
    print(f"model repository {args.repo} from {source['kind']} {source.get('run_dir', '')}".rstrip())
    for name, row in report.items():
        state = "new" if row["created"] else "unchanged"
        pruned = f", pruned {row['pruned']}" if row["pruned"] else ""
        print(f"  {name:<16} version {row['version']} ({state}{pruned})")
    return 0
