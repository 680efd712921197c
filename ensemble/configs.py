"""config.pbtxt for every model of the repository, built as Triton `ModelConfig` protobufs from the contract.

Three sets with identical tensors: `config.pbtxt` (Python backend + onnxruntime on CPU: this machine and any
CPU host), `configs/pod.pbtxt` (the same, each part's ONNX Runtime threads sized to the CPU overlay's Triton
pod: `tritonserver --model-config-name=pod`) and `configs/gpu.pbtxt` (native `onnxruntime_onnx` on `KIND_GPU`
in the NGC 24.10 container: `tritonserver --model-config-name=gpu`). Building protobufs rather than text means
a typo in a field name fails here, not at server start.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, versions
from ensemble import precision as choice
from ensemble.batching import BatchingPlan, load_plan
from ensemble.precision import MADE_BY, ONNX_FILES, served_precision
from ensemble.publish import Publication

GPU_CONFIG_NAME = "gpu"
POD_CONFIG_NAME = "pod"
# The CPU overlay's Triton pod (k8s/overlays/cpu) requests POD_CPUS and sets no CPU limit; tests/deploy keeps
# the two in step. ONNX Runtime's default (intra_op_threads 0) is a thread per physical core of the NODE, not
# of the pod: on a 64-core node each of the four parts would get a 64-thread pool for a 4-CPU share. The pod
# set gives each part POD_CPUS // parts threads, at least 1. On a 2-core box (`python -m loadtests.triton_cpu
# --threads 0,1,2,4,8 --concurrency 1,8,32 --rounds 3`, ensemble/README.md *Threads per part*), 8 threads per
# part cost Triton 42-61% more CPU per one-window request than 1 and 22-27% of its throughput.
POD_CPUS = 4
# Only the newest version of a part is served. A swap is zero-downtime because Triton loads version N+1 while
# N keeps serving, then retires N once N+1 is ready; in-flight requests finish on N. Two served versions would
# double memory for a rollback that re-exporting (or deleting N+1 and reloading) gives anyway.
SERVED_VERSIONS = 1
INSTANCES_CPU = 1  # per part: on a 2-core host a second instance only competes for the same cores
# GPU instances per part (1 where unnamed). The frontend's float64 DFT bounds a GPU on long clips: with the
# parts in PyTorch behind Triton on an H200 (loadtests.triton_gpu; docs/BENCHMARKS.md, *Triton on the GPU*),
# 32 clients of 60-s clips got 40-42 clips/s with one frontend instance (its queue 636-666 ms of a 709-764 ms
# p50, the other parts' under 1 ms), 92 with two (its queue still 280 ms) and 94-136 with four, where its
# queue was 1-2 ms and the audio encoder's became the longest. Not measured under the NGC image's
# onnxruntime backend.
INSTANCES_GPU = {contract.AUDIO_FRONTEND.name: 4}
# No `default_queue_policy` on any part. Any of its settings (a queue bound, a queue timeout, per-request
# timeout overrides) turns off Triton's payload prefetching (core scheduler_utils.cc `support_prefetching_`),
# and without it Triton 2.51's dynamic batcher loses the wake-up of a request that arrives while the part's
# instance is busy and its queue is empty: the batcher sleeps its 500 ms default (dynamic_batch_scheduler.cc
# `default_wait_microseconds`) or until the next arrival. With the bound and timeout the parts used to have,
# `python -m loadtests.queue_stall` measured one call in six of two simultaneous one-window calls held
# ~0.5 s, and the p99 of a steady 10-60 calls/s 2.4-9.6x its value without them (ensemble/README.md, *No
# queue policy*). Overload is bounded in front of Triton instead: a Gateway replica's request slots count each
# Triton call until Triton answers it (preprocess_service/triton_client.py `abandoned`).
# Inclusive bounds the Python backend checks per request (the ONNX graphs would index out of range otherwise).
VALUE_RANGES: dict[str, tuple[float, float]] = {
    contract.AGE_GROUP.name: (0, len(contract.AGE_GROUPS) - 1),
    contract.FRAME_MASK.name: (0, 1),
    contract.AUDIO_PRESENT.name: (0, 1),
    contract.WINDOW_GAIN.name: (0, 10.0 ** (contract.AUDIO_MAX_GAIN_DB / 20.0)),
}

_DTYPES = {"FP32": mc.TYPE_FP32, "INT64": mc.TYPE_INT64, "BYTES": mc.TYPE_STRING}
_TENSORRT_HINT = """\
# TensorRT (optional, NGC container with a GPU): add inside this file
#   optimization { execution_accelerators { gpu_execution_accelerator: [
#     { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" }
#                        parameters { key: "max_workspace_size_bytes" value: "1073741824" } } ] } }
# and check parity against the PyTorch model again: FP16 moves scores by ~1e-3.
"""


def _tensor(spec: contract.TensorSpec, cls: type) -> object:
    return cls(name=spec.name, data_type=_DTYPES[spec.dtype], dims=list(spec.shape))


def _add_tensors(config: mc.ModelConfig, model: contract.ModelSpec) -> None:
    config.input.extend(_tensor(t, mc.ModelInput) for t in model.inputs)
    config.output.extend(_tensor(t, mc.ModelOutput) for t in model.outputs)


def _dynamic_batching(config: mc.ModelConfig, delay_us: int, preferred: list[int]) -> None:
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = delay_us
    batching.preferred_batch_size.extend(preferred)  # no default_queue_policy: the note above VALUE_RANGES


def _warmup(config: mc.ModelConfig, model: contract.ModelSpec) -> None:
    """One zero-filled batch of 1 at load, so the first caller does not pay ORT's lazy initialisation."""
    warmup = config.model_warmup.add(name=f"{model.name}_zero_batch1", batch_size=1)
    for spec in model.inputs:
        dims = list(contract.batch_shape(spec, 1)[1:])
        warmup.inputs[spec.name].CopyFrom(
            mc.ModelWarmup.Input(data_type=_DTYPES[spec.dtype], dims=dims, zero_data=True)
        )


def part_config(model: contract.ModelSpec, plan: BatchingPlan, precision: str = "fp32") -> mc.ModelConfig:
    """Default (CPU) config of one part: the Python backend running its fp32 or int8 ONNX graph."""
    config = mc.ModelConfig(name=model.name, backend="python", max_batch_size=contract.MAX_BATCH_SIZE)
    config.version_policy.latest.num_versions = SERVED_VERSIONS
    _add_tensors(config, model)
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=INSTANCES_CPU)
    _dynamic_batching(config, plan.delay_us(model.name), plan.preferred_batch_sizes)
    _warmup(config, model)
    ranges = {t.name: VALUE_RANGES[t.name] for t in model.inputs if t.name in VALUE_RANGES}
    config.parameters["onnx_file"].string_value = ONNX_FILES[precision]
    config.parameters["intra_op_threads"].string_value = str(plan.intra_op_threads)
    config.parameters["value_ranges"].string_value = json.dumps(ranges, sort_keys=True)
    if model.name == STEP_ORDER[0].name:  # the first entry step answers bad requests with NaN (model.py)
        config.parameters["defer_rejection"].string_value = "true"
    if contract.AUDIO in model.inputs:  # the clip laid over the rows: the backend checks the layout
        layout = {
            "input": contract.AUDIO.name,
            "window": contract.WINDOW_SAMPLES,
            "hop": contract.HOP_SAMPLES,
        }
        config.parameters["clip_rows"].string_value = json.dumps(layout, sort_keys=True)
    return config


def part_gpu_config(model: contract.ModelSpec, plan: BatchingPlan) -> mc.ModelConfig:
    """NGC-container config of one part: native ONNX Runtime on the GPU, same tensors and batching limits.

    Every part serves its fp32 graph, whatever precision.json chooses for the CPU: int8 is a CPU measure, and
    the frontend keeps its float64 DFT. Its fp32-DFT graph is safe on a CPU but not under TF32, which ONNX
    Runtime's CUDA provider enables by default (`use_tf32`): measured on an H200 with PyTorch's TF32, the
    fp32 DFT moved the log-mel by up to 2.65 in quiet bands, while the float64 one matched the CPU exactly and
    cost 1.0-1.5x the fp32 one per call (docs/DEPLOY.md, *GPU*)."""
    config = mc.ModelConfig(
        name=model.name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=contract.MAX_BATCH_SIZE,
        default_model_filename=ONNX_FILES["fp32"],
    )
    config.version_policy.latest.num_versions = SERVED_VERSIONS
    _add_tensors(config, model)
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=INSTANCES_GPU.get(model.name, 1))
    _dynamic_batching(config, plan.gpu_delay_us, plan.preferred_batch_sizes)
    _warmup(config, model)
    return config


def part_torch_gpu_config(model: contract.ModelSpec, plan: BatchingPlan, kind: str = "GPU") -> mc.ModelConfig:
    """The GPU config served by the Python backend, each part in PyTorch on its instance's device
    (ensemble/backend/torch_model.py), for a tritonserver without the onnxruntime backend
    (loadtests.triton_gpu).

    Instances and batching are `part_gpu_config`'s; the parameters are the CPU config's at fp32, so the
    served model.py keeps its checks of every request. `kind` "CPU": the same on the CPU (a harness check)."""
    config = part_gpu_config(model, plan)
    config.ClearField("platform")
    config.ClearField("default_model_filename")
    config.backend = "python"
    config.instance_group[0].kind = mc.ModelInstanceGroup.Kind.Value(f"KIND_{kind}")
    for key, value in part_config(model, plan).parameters.items():
        config.parameters[key].CopyFrom(value)
    return config


# Step order is scheduling order, and it matters. Triton 2.51 deadlocks when a composing model answers an
# error while the ensemble is still scheduling its entry steps: the gRPC frontend holds the request's lock
# across InferAsync, the ensemble takes its context lock before scheduling each entry step, and the error
# callback holds the context lock while it waits for the frontend's lock (found with gdb on a wedged server;
# the stub then waits forever for the server to take its reply). audio_frontend rejects poisoned waveforms
# within microseconds, so it is scheduled LAST among the entry steps: once it is handed over, the scheduling
# thread takes no further lock, and its error cannot deadlock. visual_encoder, the other entry step, goes
# first (ensemble/README.md: what it may and may not reject).
STEP_ORDER: tuple[contract.ModelSpec, ...] = (
    contract.VISUAL_ENCODER, contract.AUDIO_FRONTEND, contract.AUDIO_ENCODER, contract.FUSION,
)  # fmt: skip


def ensemble_config(fusion: contract.ModelSpec = contract.FUSION) -> mc.ModelConfig:
    """The `avpenet` ensemble: audio_frontend -> audio_encoder; visual_encoder; both -> fusion (all FP32);
    its outputs are those of `fusion` as served (versions.served_part)."""
    config = mc.ModelConfig(
        name=contract.ENSEMBLE.name, platform="ensemble", max_batch_size=contract.MAX_BATCH_SIZE
    )
    _add_tensors(config, dataclasses.replace(contract.ENSEMBLE, outputs=fusion.outputs))
    for part in (fusion if p is contract.FUSION else p for p in STEP_ORDER):
        # model_version -1: the newest version Triton serves of that part
        step = config.ensemble_scheduling.step.add(model_name=part.name, model_version=-1)
        for tensor in part.inputs:
            step.input_map[tensor.name] = tensor.name
        for tensor in part.outputs:
            step.output_map[tensor.name] = tensor.name
    return config


def render(config: mc.ModelConfig, header: str) -> str:
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.strip().splitlines())
    return comment + "\n" + text_format.MessageToString(config)


def parse(path: Path) -> mc.ModelConfig:
    """A config file as Triton reads it (raises on unknown fields)."""
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def render_configs(
    repo: Path,
    plan: BatchingPlan | None = None,
    precision: dict[str, str] | None = None,
    source: dict | None = None,
) -> dict[Path, str]:
    """{path: text} of config.pbtxt, configs/pod.pbtxt and configs/gpu.pbtxt of every model, for the versions
    now on disk, and of the ensemble's record of the part versions served (versions.served_record; `source`: a
    new export's run).

    `precision`: {part: one of PRECISIONS[part]} over the repository's own choice (precision.py). A
    repository other than the committed one without a precision.json of its own gets one: the choice it
    followed until then (ensemble/precision.json's), which a later change to that tracked file would
    otherwise switch unannounced at its next export, quantisation or config rewrite."""
    plan = plan or load_plan()
    chosen = choice.repository_precision(repo)
    precision = {**chosen, **(precision or {})}
    record = versions.served_record(repo, source)
    texts: dict[Path, str] = dict([record]) if record is not None else {}
    if not (own := choice.own_path(repo)).exists():  # another repository keeps the choice it followed
        texts[own] = choice.choice_text(chosen)
    generated = "Generated by `avpenet export` (ensemble/configs.py) from avpenet/contract.py; do not edit."
    pod = dataclasses.replace(plan, intra_op_threads=pod_threads())  # the pod set's plan, every part alike
    for part in (versions.served_part(repo, p) for p in contract.PARTS):
        folder = repo / part.name
        header = "\n".join([generated, *plan.describe(part.name)])
        served = served_precision(repo, part.name, precision[part.name])
        if precision[part.name] != "fp32":
            wanted = precision[part.name]
            header += f"\nprecision: {served} ({wanted} wanted; its graph is made by {MADE_BY[wanted]})"
        texts[folder / "config.pbtxt"] = render(part_config(part, plan, served), header)
        pod_header = f"{header}\n{POD_NOTE.format(cpus=POD_CPUS, threads=pod.intra_op_threads)}"
        texts[folder / "configs" / f"{POD_CONFIG_NAME}.pbtxt"] = render(
            part_config(part, pod, served), pod_header
        )
        gpu_header = "\n".join(
            [generated, "NGC tritonserver:24.10-py3 with --model-config-name=gpu.", *plan.describe_gpu()]
        )
        gpu = part_gpu_config(part, plan)
        texts[folder / "configs" / f"{GPU_CONFIG_NAME}.pbtxt"] = (
            render(gpu, gpu_header) + "\n" + _TENSORRT_HINT
        )
    folder = repo / contract.ENSEMBLE.name
    fusion = versions.served_part(repo, contract.FUSION)
    text = render(ensemble_config(fusion), f"{generated}\nThe same ensemble serves every config set.")
    for name in ("config.pbtxt", f"configs/{POD_CONFIG_NAME}.pbtxt", f"configs/{GPU_CONFIG_NAME}.pbtxt"):
        texts[folder / name] = text
    return texts


POD_NOTE = (
    "tritonserver --model-config-name=pod (k8s/overlays/cpu): intra_op_threads {threads}, "
    "the pod's {cpus} CPUs shared by the parts"
)


def pod_threads() -> int:
    """ONNX Runtime threads per part in the CPU overlay's pod: its CPUs shared by the parts, at least 1."""
    return max(1, POD_CPUS // len(contract.PARTS))


def write_configs(
    repo: Path,
    plan: BatchingPlan | None = None,
    precision: dict[str, str] | None = None,
    keep_precision: bool = False,
) -> list[Path]:
    """(Re)write every config set of every model and the ensemble's record of the versions served
    (render_configs); returns the files. `keep_precision`: `precision` also becomes the repository's own
    choice (precision.own_path), so a later export or quantisation into it serves the same graphs.

    All or none, each file replaced whole (a hidden temporary beside it, then `os.replace`): a crash or a full
    disk mid-write used to leave a truncated config.pbtxt, which Triton refuses to load."""
    with Publication(repo) as tx:  # rendered under its lock: no writer changes the versions meanwhile
        texts = render_configs(repo, plan, precision)
        if keep_precision:
            texts[choice.own_path(repo)] = choice.choice_text(
                {**choice.repository_precision(repo), **(precision or {})}
            )
        for path, text in texts.items():
            tx.write_text(path, text)
    return list(texts)


def main(argv: list[str] | None = None) -> int:
    """`python -m ensemble.configs [--repo DIR] [--precision part=int8,...]`: rewrite every config for the
    versions now on disk (and with --precision, the repository's own precision choice first). After a
    rollback deleted a part's newest version, its config may still name a graph only that version held (the
    frontend's fp32-DFT graph, an int8 graph): Triton would then fail to load the part; and the ensemble's
    record would still name the deleted version as served."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ensemble.configs", description="rewrite every config")
    parser.add_argument(  # the repository `avpenet export` writes, wherever this runs from
        "--repo", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: %(default)s)"
    )
    parser.add_argument(
        "--precision", default=None, metavar="PART=PRECISION,...",
        help="change the repository's precision choice (REPO/precision.json; ensemble/precision.json for the "
        "committed repository), e.g. audio_encoder=int8,visual_encoder=int8,fusion=int8 or fusion=fp32",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = choice.parse_choice(args.precision) if args.precision is not None else None
    for path in write_configs(args.repo, precision=chosen, keep_precision=chosen is not None):
        print(path)
    return 0


if __name__ == "__main__":
    from avpenet.user_errors import exit_code  # a busy repository: one line and exit 2, as avpenet export

    raise SystemExit(exit_code("python -m ensemble.configs", main))
