"""The model stage on a GPU, measured with PyTorch where Triton's GPU backend is not at hand.

Triton's GPU configs (`<model>/configs/gpu.pbtxt`) serve the ONNX graphs with the onnxruntime backend of the
NGC tritonserver image. A GPU machine without that image (nothing to pull it from) still has PyTorch and
CUDA: `python -m loadtests.device_stage --device cuda` runs the same four parts with the weights the graphs
were exported from (avpenet/reference) on the request shapes the dynamic batcher forms
(ensemble.precision_measure.stage_requests: 1 to 64 stacked one-window requests, and the long mix's 60-s
clip of 58 windows), and beside them the CPU path the project serves on the same box (the served ONNX
graphs in ONNX Runtime, every core). Each call is timed host to host, as a backend sees a request: inputs
copied to the device, outputs copied back.

It answers two questions for the GPU plan in docs/DEPLOY.md: how fast the model stage is there (ms per call,
windows/s), and whether the GPU computes the same scores (each variant's largest log-mel and score
difference from the CPU reference: the PyTorch model with its float64 frontend). It does not measure
Triton's own costs (gRPC, the ensemble's hops, queueing) nor TensorRT.

The inputs are the bench's 60-s `landmarks_60s` clip (cry audio, the real tracker's face track) through the
gateway's feature code; `--save-inputs` keeps them for a machine without the tracker (`--inputs`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_number

BATCHES = (1, 8, 32, 64)  # stacked one-window requests; 64 is every config's max_batch_size
MIN_CALLS = 5
COMPARED = (contract.LOG_MEL.name, *(t.name for t in contract.FUSION.outputs))  # what each stage returns


def bench_tensors(seconds: float = 60.0) -> dict[str, np.ndarray]:
    """The PyTorch model's windows of the bench's landmarks clip: what the gateway makes of that upload."""
    from avpenet.features import visual, windows
    from avpenet.features.track import FaceTrack
    from loadtests import clips

    track = FaceTrack.load_npz(clips.landmarks_npz(seconds))
    feats, mask = visual.frame_features(track)
    return windows.inputs_from_features(clips.cry_audio(seconds), feats, mask, "neonate")


def served_requests(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the largest stack of one-window requests, the 58-window clip) as ensemble requests; a smaller
    stack is a prefix of the largest (stage_requests cycles the same windows)."""
    from ensemble.precision_measure import stage_requests

    stack, clip = stage_requests(tensors, batches=(max(BATCHES),)).values()
    return contract.one_window_requests(stack), clip


def request_shapes(stack: dict[str, np.ndarray], clip: dict[str, np.ndarray]) -> dict[str, dict]:
    """{shape: ensemble request}: each of BATCHES stacked one-window requests, then the long clip."""
    out = {f"{b} window{'s' * (b > 1)}": {k: v[:b] for k, v in stack.items()} for b in BATCHES}
    return out | {f"{len(clip[contract.WINDOW_GAIN.name])}-window clip": clip}


def save_requests(path: Path, stack: dict[str, np.ndarray], clip: dict[str, np.ndarray]) -> None:
    np.savez(path, **{f"stack.{k}": v for k, v in stack.items()}, **{f"clip.{k}": v for k, v in clip.items()})


def load_requests(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(path) as saved:
        parts = {
            part: {k.split(".", 1)[1]: saved[k] for k in saved.files if k.startswith(f"{part}.")}
            for part in ("stack", "clip")
        }
    return parts["stack"], parts["clip"]


class TorchStage:
    """frontend -> audio_encoder, visual_encoder -> fusion on one device, as the ensemble chains them."""

    def __init__(
        self, device: str, frontend_dtype: str = "float64", autocast: str | None = None, tf32: bool = False
    ) -> None:
        import torch

        from avpenet.model import AudioFrontend, load_model

        self.torch, self.device = torch, torch.device(device)
        self.model = load_model().model.to(self.device)
        self.frontend = AudioFrontend(getattr(torch, frontend_dtype)).to(self.device).eval()
        self.autocast = autocast
        self.tf32 = tf32  # PyTorch's default lets cuDNN convolutions use TF32; fp32 here means fp32

    def __call__(self, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, m = self.torch, self.model
        x = {k: torch.from_numpy(v).to(self.device) for k, v in request.items()}
        amp = (
            torch.autocast(self.device.type, dtype=getattr(torch, self.autocast))
            if self.autocast
            else nullcontext()
        )
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        with torch.inference_mode():
            log_mel = self.frontend(x[contract.AUDIO.name], x[contract.WINDOW_GAIN.name])
            with amp:
                audio_tokens = m.audio_encoder(log_mel)
                visual_tokens = m.visual_encoder(
                    x[contract.VISUAL_FEATURES.name], x[contract.FRAME_MASK.name]
                )
                out = m.fusion(
                    audio_tokens,
                    visual_tokens,
                    x[contract.FRAME_MASK.name],
                    x[contract.AUDIO_PRESENT.name],
                    x[contract.AGE_GROUP.name],
                )
        return {k: v.float().cpu().numpy() for k, v in zip(COMPARED, (log_mel, *out), strict=True)}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


class OrtStage:
    """The CPU path the project serves: the configured ONNX graphs in ONNX Runtime, every core."""

    def __init__(self) -> None:
        from ensemble.ort_chain import OrtChain

        self.chain = OrtChain()

    def __call__(self, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.chain.all_tensors(request)
        return {k: values[k] for k in COMPARED}

    def synchronize(self) -> None:
        pass


def variants(device: str) -> dict[str, Callable[[], TorchStage | OrtStage]]:
    """{name: factory}. The first is the reference every other is compared with."""
    out: dict[str, Callable[[], TorchStage | OrtStage]] = {
        "cpu pytorch, float64 frontend (reference)": lambda: TorchStage("cpu"),
        "cpu onnxruntime, served graphs": OrtStage,
    }
    if device != "cpu":
        out |= {
            f"{device} fp32, float64 frontend": lambda: TorchStage(device),
            f"{device} fp32, fp32-DFT frontend": lambda: TorchStage(device, "float32"),
            f"{device} tf32, fp32-DFT frontend": lambda: TorchStage(device, "float32", tf32=True),
            f"{device} fp16 autocast, fp32-DFT frontend": lambda: TorchStage(device, "float32", "float16"),
        }
    return out


def time_calls(stage: TorchStage | OrtStage, request: dict[str, np.ndarray], seconds: float) -> float:
    """Median ms of one call after warm-up, over at least `seconds` and MIN_CALLS calls."""
    for _ in range(3):
        stage(request)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < MIN_CALLS or time.perf_counter() < end:
        stage.synchronize()
        start = time.perf_counter()
        stage(request)
        stage.synchronize()
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(
    device: str, requests: dict[str, dict[str, np.ndarray]], seconds: float
) -> dict[str, dict[str, dict[str, float]]]:
    """{variant: {shape: {ms, windows_per_s, max_abs_log_mel, max_abs_score}}}, differences from the first."""
    reference: dict[str, dict[str, np.ndarray]] = {}
    report: dict[str, dict[str, dict[str, float]]] = {}
    for name, make in variants(device).items():
        try:
            stage = make()
        except Exception as e:  # noqa: BLE001 - e.g. no tritonclient on a bare GPU machine
            if not report:  # the reference itself
                raise
            print(f"{name}: not measured ({type(e).__name__}: {e})")
            continue
        report[name] = {}
        for shape, request in requests.items():
            out = stage(request)
            ref = reference.setdefault(shape, out)
            windows = len(request[contract.WINDOW_GAIN.name])
            ms = time_calls(stage, request, seconds)
            report[name][shape] = {
                "ms": ms,
                "windows_per_s": 1000.0 * windows / ms,
                "max_abs_log_mel": float(
                    np.abs(out[contract.LOG_MEL.name] - ref[contract.LOG_MEL.name]).max()
                ),
                "max_abs_score": float(np.abs(out[contract.SCORE.name] - ref[contract.SCORE.name]).max()),
            }
            print(f"{name:45s} {shape:16s} {ms:9.2f} ms  {report[name][shape]['windows_per_s']:9.0f} win/s")
        del stage
    return report


def machine(device: str) -> dict[str, str]:
    """What the figures were measured on."""
    import onnxruntime
    import torch

    from loadtests.host import machine as host

    on_gpu = device.startswith("cuda") and torch.cuda.is_available()  # else its variants say why not
    gpu = torch.cuda.get_device_name(torch.device(device)) if on_gpu else "none"
    return {"gpu": gpu, "cpu": host(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def markdown(report: dict, info: dict[str, str]) -> str:
    """One table per request shape: each variant's ms, windows/s, ratio to the served CPU path, parity."""
    served = next((name for name in report if "served" in name), next(iter(report)))
    lines = [f"- {k}: {v}" for k, v in info.items()] + [f"- x baseline: speed against {served}"]
    for shape in next(iter(report.values())):
        base = report[served][shape]["ms"]
        lines += [
            "",
            f"**{shape}**",
            "",
            "| variant | ms per call | windows/s | x baseline | max abs log-mel diff | max abs score diff |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in report.items():
            r = row[shape]
            lines.append(
                f"| {name} | {r['ms']:.2f} | {r['windows_per_s']:.0f} | {base / r['ms']:.2f} | "
                f"{r['max_abs_log_mel']:.2e} | {r['max_abs_score']:.2e} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device beside the CPU (cpu: the CPU alone)")
    parser.add_argument(
        "--seconds", type=positive_number, default=1.0, help="timed seconds per variant and shape"
    )
    parser.add_argument("--inputs", type=Path, help="requests saved by --save-inputs (no tracker needed)")
    parser.add_argument("--save-inputs", type=Path, help="write the bench clip's requests here and stop")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    stack, clip = load_requests(args.inputs) if args.inputs else served_requests(bench_tensors())
    if args.save_inputs:
        save_requests(args.save_inputs, stack, clip)
        return 0
    info = machine(args.device)
    report = measure(args.device, request_shapes(stack, clip), args.seconds)
    print(markdown(report, info))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "variants": report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
