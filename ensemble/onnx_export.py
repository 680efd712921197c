"""One AVPENet part -> ONNX bytes with contract tensor names and a dynamic batch axis, checked vs PyTorch.

The legacy TorchScript exporter (opset 17) is used: for identical weights it writes the same graph, and on the
same CPU the same bytes. Folded constants can differ in their last bits between CPUs, which is why
`versions.py` compares graphs with graph_diff.py rather than by file digest.
"""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from avpenet import contract

OPSET = 17
PARITY_ATOL = 1e-4  # torch vs ORT on the exported graph (seen: <= 1e-6 on the heads)


class _Exportable(nn.Module):
    """Calls a part with the contract's inputs in order; returns its outputs as a tuple in contract order."""

    def __init__(self, part: nn.Module, spec: contract.ModelSpec) -> None:
        super().__init__()
        self.part = part
        self.output_names = [t.name for t in spec.outputs]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.part(*inputs)
        if isinstance(out, dict):
            return tuple(out[name] for name in self.output_names)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def valid_inputs(spec: contract.ModelSpec, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs within every contract bound (index in range, masks 0/1) for tracing and parity checks."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        shape = contract.batch_shape(t, batch)
        if t.name == contract.AGE_GROUP.name:
            arrays[t.name] = rng.integers(0, len(contract.AGE_GROUPS), shape).astype(np.int64)
        elif t.name in (contract.FRAME_MASK.name, contract.AUDIO_PRESENT.name):
            arrays[t.name] = (rng.random(shape) > 0.2).astype(np.float32)
        elif t.name in (contract.WAVEFORM.name, contract.AUDIO.name):
            arrays[t.name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif t.name == contract.WINDOW_GAIN.name:
            arrays[t.name] = (0.5 + rng.random(shape)).astype(np.float32)
        elif t.name == contract.LOG_MEL.name:
            arrays[t.name] = (rng.standard_normal(shape) - 8.0).astype(np.float32)
        else:
            arrays[t.name] = rng.standard_normal(shape).astype(np.float32)
    return arrays


def dynamic_axes(name: str) -> dict[int, str]:
    """The batch axis, and AUDIO's row length (it follows the window count: contract.audio_row_samples)."""
    return {0: "batch", 1: "row_samples"} if name == contract.AUDIO.name else {0: "batch"}


def run_torch(
    part: nn.Module, spec: contract.ModelSpec, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    wrapped = _Exportable(part, spec).eval()
    with torch.inference_mode():
        outs = wrapped(*(torch.from_numpy(inputs[t.name]) for t in spec.inputs))
    return {t.name: o.numpy() for t, o in zip(spec.outputs, outs, strict=True)}


def run_onnx(
    onnx_bytes: bytes, spec: contract.ModelSpec, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    names = [t.name for t in spec.outputs]
    return dict(zip(names, session.run(names, {t.name: inputs[t.name] for t in spec.inputs}), strict=True))


def export_part(
    part: nn.Module, spec: contract.ModelSpec, reference: nn.Module | None = None, atol: float = PARITY_ATOL
) -> tuple[bytes, float]:
    """ONNX bytes of `part` and the max |torch - ORT| on valid inputs at a batch the trace did not see.

    `reference` (default `part`) is the module the graph is checked against, within `atol`: the fp32-DFT
    frontend is checked against the float64 one it stands in for, not against its own fp32 rounding."""
    wrapped = _Exportable(part, spec).eval()  # a fresh wrapper is in training mode; the exporter restores it
    trace = valid_inputs(spec, batch=2, seed=0)
    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            wrapped,
            tuple(torch.from_numpy(trace[n]) for n in names_in),
            buffer,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={n: dynamic_axes(n) for n in names_in + names_out},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    onnx_bytes = buffer.getvalue()
    check = valid_inputs(spec, batch=3, seed=1)
    expected, got = run_torch(reference or part, spec, check), run_onnx(onnx_bytes, spec, check)
    diff = max(float(np.max(np.abs(expected[n] - got[n]))) for n in names_out)
    if not diff <= atol:
        raise RuntimeError(f"{spec.name}: ONNX differs from PyTorch by {diff:.3g} (> {atol})")
    return onnx_bytes, diff
