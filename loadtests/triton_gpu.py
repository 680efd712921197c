"""Triton on a GPU: the real tritonserver serving the GPU configs, each part in PyTorch on the GPU.

`python -m loadtests.triton_gpu --inputs R` starts a tritonserver on each of two repositories in turn, on the
same machine, and sends each the bench's `model` mix (one-window requests) and `long` mix (one 60-s clip of
58 windows per request) from closed-loop clients at each concurrency:

- `cpu served`: model_repository/ as committed, the Python backend running the ONNX graphs on the CPU (each
  part's model.py wrapped so that its outputs go to Triton by DLPack: ensemble/backend/torch_model.py
  `DlpackModel`, for a machine whose NumPy is 2);
- `gpu torch`: the GPU configs (`<part>/configs/gpu.pbtxt`: instances on the GPU, their dynamic batching)
  with the Python backend in place of the onnxruntime one, each part in PyTorch on the GPU with the weights
  the graphs were exported from (ensemble/backend/torch_model.py, ensemble/configs.py
  `part_torch_gpu_config`).

Why PyTorch: the GPU configs name the NGC image's onnxruntime backend, the nvidia-pytriton wheel's
tritonserver has only the Python backend, and a GPU machine without a registry cannot pull the image. So this
measures what Triton itself adds on a GPU (gRPC, the ensemble's hops, queueing, dynamic batching) around
the compute that `loadtests.device_stage` times alone, not ONNX Runtime's CUDA provider.

Per cell: requests/s, windows/s, the client's p50 and p99 ms, and from Triton's counters each part's average
batch (windows per execution), compute ms per execution and queue ms per request. Both variants' answers to
the same two requests are compared (largest difference of each output). R: `python -m loadtests.triton_gpu
--save-inputs R` (the bench's `landmarks_60s` clip through the gateway's feature code, for a machine without
the tracker). `--kind cpu` puts the PyTorch parts on the CPU instead: a check of this harness on a machine
without a GPU.

The whole stack on such a machine (gateway, Ray Serve, Triton): `--write-repo DIR` writes the PyTorch
repository into DIR/torch-gpu (or torch-cpu) and prints its path; `avpenet bench --repo DIR/torch-gpu` then
serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_ints, positive_number

# The model.py of each part's newest version: Triton starts the stub in a scratch folder and its Python
# ignores PYTHONPATH, so the shim puts the project on sys.path itself.
SHIM = """import sys

sys.path.insert(0, {root!r})
from ensemble.backend.torch_model import {cls} as TritonPythonModel  # noqa: E402,F401 (loadtests.triton_gpu)
"""
WARM_UP = 3
READY_TIMEOUT_S = 300.0  # four stubs importing PyTorch and moving weights to the GPU


def repository(into: Path, kind: str | None, instances: dict[str, int] | None = None) -> Path:
    """A copy of model_repository/ whose parts' model.py is a shim to ensemble/backend/torch_model.py.

    kind None: the committed configs, the served ONNX graphs on the CPU (`DlpackModel`); "GPU" or "CPU": each
    part in PyTorch on instances of that kind under `part_torch_gpu_config`, `instances` {part: count}
    overriding its instance count."""
    from ensemble import DEFAULT_REPOSITORY, PROJECT_ROOT
    from ensemble.batching import load_plan
    from ensemble.configs import part_torch_gpu_config, render
    from ensemble.versions import latest

    repo = into / (f"torch-{kind.lower()}" if kind else "served")
    shutil.copytree(DEFAULT_REPOSITORY, repo, ignore=shutil.ignore_patterns("__pycache__"))
    plan = load_plan()
    shim = SHIM.format(root=str(PROJECT_ROOT), cls="TritonPythonModel" if kind else "DlpackModel")
    for part in contract.PARTS:
        folder = repo / part.name
        (folder / str(latest(folder)) / "model.py").write_text(shim)
        if kind:
            config = part_torch_gpu_config(part, plan, kind)
            config.instance_group[0].count = (instances or {}).get(part.name, config.instance_group[0].count)
            header = f"Written by loadtests.triton_gpu: {part.name} in PyTorch, instances of kind {kind}."
            (folder / "config.pbtxt").write_text(render(config, header))
    return repo


def mixes(stack: dict[str, np.ndarray], clip: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{mix: one ensemble request}: the model mix's one window, the long mix's 58-window clip."""
    return {"model": {k: v[:1] for k, v in stack.items()}, "long": clip}


def cell(server, request: dict[str, np.ndarray], clients: int, seconds: float) -> dict:
    """One mix at one concurrency on a running server: the client's figures and Triton's per part (windows
    per execution; loadtests.stagetime's queue ms per request and compute ms of the batch a request ran in,
    input + infer + output: Triton's counters add a batch's time once per request in it)."""
    from ensemble.client import average_batch
    from ensemble.tune import closed_loop
    from loadtests import stagetime

    windows = len(request[contract.WINDOW_GAIN.name])
    before = stagetime.scrape([server.metrics_url])
    started = time.perf_counter()
    latencies = asyncio.run(closed_loop(server.grpc_url, request, clients, seconds))
    elapsed = time.perf_counter() - started
    delta = stagetime.delta(before, stagetime.scrape([server.metrics_url]))
    times = stagetime.model_times(delta, elapsed, [p.name for p in contract.PARTS])
    parts = {
        t.model: {
            "avg_batch": average_batch(delta, t.model),
            "compute_ms_per_exec": t.compute_ms,
            "queue_ms_per_request": t.queue_ms,
        }
        for t in times
    }
    return {
        "requests_per_s": len(latencies) / elapsed,
        "windows_per_s": windows * len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": float(np.percentile(latencies, 99)),
        "requests": len(latencies),
        "parts": parts,
    }


def run_variant(server, requests: dict, concurrency: list[int], seconds: float) -> tuple[dict, dict]:
    """({mix: {clients: cell}}, {mix: {output: array}}) of one started server."""
    import tritonclient.grpc as grpcclient

    from ensemble.client import infer_inputs

    client = grpcclient.InferenceServerClient(server.grpc_url)
    scores = {}
    for mix, request in requests.items():
        for _ in range(WARM_UP):
            tensors = infer_inputs(grpcclient, contract.ENSEMBLE, request)
            result = client.infer(contract.ENSEMBLE.name, tensors)
        scores[mix] = {t.name: result.as_numpy(t.name) for t in contract.ENSEMBLE.outputs}
    client.close()
    cells: dict[str, dict[int, dict]] = {mix: {} for mix in requests}
    for mix, request in requests.items():
        for clients in concurrency:
            cells[mix][clients] = cell(server, request, clients, seconds)
            c = cells[mix][clients]
            print(
                f"{mix:5s} c={clients:<3d} {c['requests_per_s']:8.1f} req/s {c['windows_per_s']:8.0f} win/s "
                f"p50 {c['p50_ms']:8.1f} p99 {c['p99_ms']:8.1f} ms  "
                + " ".join(f"{p}:{v['avg_batch']:.1f}" for p, v in c["parts"].items()),
                flush=True,
            )
    return cells, scores


def measure(
    kind: str, requests: dict, concurrency: list[int], seconds: float, instances: dict, baseline: bool = True
) -> dict:
    """{variant: {mix: {clients: cell}}} plus each variant's largest output differences from the first."""
    from ensemble.server import TritonServer

    report: dict = {"variants": {}, "max_abs_diff": {}}
    reference: dict = {}
    with tempfile.TemporaryDirectory(prefix="avpenet-triton-gpu-") as work:
        repos = {"cpu served": repository(Path(work), None)} if baseline else {}
        label = "".join(f", {part} x{n}" for part, n in instances.items())
        repos[f"{kind.lower()} torch{label}"] = repository(Path(work), kind, instances)
        for name, repo in repos.items():
            print(f"== {name}: {repo}", flush=True)
            with TritonServer(repo=repo, ready_timeout_s=READY_TIMEOUT_S) as server:
                cells, scores = run_variant(server, requests, concurrency, seconds)
            report["variants"][name] = cells
            reference = reference or scores
            report["max_abs_diff"][name] = {
                t.name: max(float(np.abs(scores[m][t.name] - reference[m][t.name]).max()) for m in requests)
                for t in contract.ENSEMBLE.outputs
            }
    return report


def markdown(report: dict, info: dict[str, str]) -> str:
    """One table per mix: each variant and concurrency, the client's figures and the parts' batches."""
    lines = [f"- {k}: {v}" for k, v in info.items()]
    first = next(iter(report["variants"]))
    for name, diffs in report["max_abs_diff"].items():
        lines.append(
            f"- {name}, largest difference from {first}: "
            + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        )
    parts = [p.name for p in contract.PARTS]
    for mix in next(iter(report["variants"].values())):
        lines += ["", f"**{mix} mix**", ""]
        head = ["variant", "clients", "req/s", "windows/s", "p50 ms", "p99 ms"]
        head += [f"{p} batch / compute ms / queue ms" for p in parts]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, cells in report["variants"].items():
            for clients, c in cells[mix].items():
                row = [name, str(clients), f"{c['requests_per_s']:.1f}", f"{c['windows_per_s']:.0f}"]
                row += [f"{c['p50_ms']:.1f}", f"{c['p99_ms']:.1f}"]
                row += [
                    f"{v['avg_batch']:.1f} / {v['compute_ms_per_exec']:.1f} / {v['queue_ms_per_request']:.1f}"
                    for v in (c["parts"][p] for p in parts)
                ]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def save_mixes(path: Path, requests: dict[str, dict[str, np.ndarray]]) -> None:
    np.savez_compressed(path, **{f"{mix}.{k}": v for mix, r in requests.items() for k, v in r.items()})


def load_mixes(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with np.load(path) as saved:
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in saved.files:
            mix, name = key.split(".", 1)
            out.setdefault(mix, {})[name] = saved[key]
    return out


def parse_instances(parser: argparse.ArgumentParser, text: str) -> dict[str, int]:
    """`PART=N,...` as {part: N}; a part the contract lacks or a count below 1 is a usage error."""
    parts = {p.name for p in contract.PARTS}
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, _, count = item.partition("=")
        if name not in parts or not count.isdigit() or int(count) < 1:
            parser.error(
                f"--instances takes PART=N with N >= 1 and PART one of {sorted(parts)}; got {item!r}"
            )
        out[name] = int(count)
    return out


def main(argv: list[str] | None = None) -> int:
    from loadtests import device_stage

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=Path, help="the mixes' requests saved by --save-inputs")
    parser.add_argument("--save-inputs", type=Path, help="write the mixes' requests here and stop")
    parser.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="where the PyTorch parts run")
    parser.add_argument("--instances", default="", help="PART=N,...: instances of the PyTorch parts")
    parser.add_argument("--no-baseline", action="store_true", help="skip the cpu served variant")
    parser.add_argument(
        "--write-repo",
        type=Path,
        help="write the PyTorch repository (--kind, --instances) under DIR, print its path and stop",
    )
    parser.add_argument(
        "--concurrency", type=positive_ints, default="1,8,32", help="comma list of closed-loop clients"
    )
    parser.add_argument("--seconds", type=positive_number, default=10.0, help="measured seconds per cell")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    instances = parse_instances(parser, args.instances)
    if args.write_repo:
        args.write_repo.mkdir(parents=True, exist_ok=True)
        print(repository(args.write_repo, args.kind.upper(), instances))
        return 0
    if args.inputs:
        requests = load_mixes(args.inputs)
    else:
        requests = mixes(*device_stage.served_requests(device_stage.bench_tensors()))
    if args.save_inputs:
        save_mixes(args.save_inputs, requests)
        return 0
    if args.kind == "gpu":
        import torch

        if not torch.cuda.is_available():
            parser.error("PyTorch sees no CUDA device here; `--kind cpu` checks this harness on the CPU")
    info = device_stage.machine("cuda" if args.kind == "gpu" else "cpu")
    report = measure(
        args.kind.upper(), requests, args.concurrency, args.seconds, instances, not args.no_baseline
    )
    print(markdown(report, info))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
