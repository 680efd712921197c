"""Triton Python-backend model that runs one AVPENet part in PyTorch on its instance's device.

For a GPU machine whose tritonserver has no onnxruntime backend (the nvidia-pytriton wheel's carries only the
Python backend): the served model.py unchanged (its checks, its batching of a dynamic batch into one call,
its error answers), with its ONNX Runtime session swapped for the PyTorch module the graph was exported from
(the reference weights, avpenet/reference). The frontend keeps its float64 DFT and TF32 stays off, as the
GPU configs serve the fp32 graphs (ensemble/configs.py `part_gpu_config`). `loadtests.triton_gpu` builds a
repository whose version folders hold a shim model.py that imports this class; model_repository/ never
does. The part's ONNX graph is still opened on the CPU by the served model's `initialize`, which checks it
against the config; the PyTorch module then serves every call.

Outputs are handed to Triton by DLPack (`DlpackModel`, also what loadtests.triton_gpu serves the CPU graphs
with there): the wheel's stub, built against NumPy 1, took a NumPy 2 array as 0 bytes (seen on a GPU machine
whose Python has NumPy 2.5: "input byte size mismatch for input 'log_mel' for model 'audio_encoder'.
Expected 153600, got 0"); a DLPack capsule carries its own dtype and size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.utils.dlpack

from avpenet import contract
from avpenet.model import AudioFrontend, load_model
from ensemble.backend import model as served


class TorchPart:
    """The `session.run(names, feeds)` the served model calls, answered by the part's PyTorch module."""

    def __init__(self, part: str, device: torch.device) -> None:
        whole = load_model().model
        modules = {
            contract.AUDIO_FRONTEND.name: AudioFrontend(torch.float64),
            contract.AUDIO_ENCODER.name: whole.audio_encoder,
            contract.VISUAL_ENCODER.name: whole.visual_encoder,
            contract.FUSION.name: whole.fusion,
        }
        self.module = modules[part].to(device).eval()
        self.spec = next(p for p in contract.PARTS if p.name == part)
        self.device = device
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = (np.ascontiguousarray(feeds[t.name]) for t in self.spec.inputs)
        args = [torch.from_numpy(a).to(self.device) for a in inputs]
        with torch.inference_mode():
            out = self.module(*args)
        outs = out if isinstance(out, tuple) else (out,)
        values = dict(zip((t.name for t in self.spec.outputs), outs, strict=True))
        return [values[name].float().cpu().numpy() for name in names]


class _DlpackTensors:
    """triton_python_backend_utils as the served model sees it, except that its tensors go by DLPack."""

    def __init__(self, utils) -> None:
        self._utils = utils

    def __getattr__(self, name: str):
        return getattr(self._utils, name)

    def Tensor(self, name: str, array: np.ndarray):  # noqa: N802 - the name the served model calls
        capsule = torch.utils.dlpack.to_dlpack(torch.from_numpy(np.ascontiguousarray(array)))
        return self._utils.Tensor.from_dlpack(name, capsule)


class DlpackModel(served.TritonPythonModel):
    """The served model (ONNX Runtime on the CPU), its outputs handed over by DLPack."""

    def initialize(self, args: dict) -> None:
        if not isinstance(served.pb_utils, _DlpackTensors):
            served.pb_utils = _DlpackTensors(served.pb_utils)
        super().initialize(args)


class TritonPythonModel(DlpackModel):
    """The part in PyTorch on its instance's device."""

    def initialize(self, args: dict) -> None:
        super().initialize(args)
        on_gpu = args.get("model_instance_kind") == "GPU"
        device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        self.session = TorchPart(args["model_name"], device)
