"""Are two exported ONNX files the same model? Structure exactly, float constants within a few ULP.

Exporting the same checkpoint on two CPUs gives files that differ in the last bits of folded constants
(BatchNorm folded into convolutions is computed with whatever SIMD path the CPU has: FMA or not, another
reduction order), so comparing file digests would call them different models. Here the graph (nodes, edges,
attributes, integer tensors, opsets, inputs and outputs) must match exactly, and each float tensor must match
element-wise within `ULP_BUDGET` float32 units in the last place of that tensor's largest magnitude:

    |a - b| <= ULP_BUDGET * eps * max(|a|max, |b|max),   eps = max(eps(dtype), 2**-23)   (7.6e-6 relative)

Why scaled by the tensor's largest magnitude: a folded bias `beta - mean * gamma / sqrt(var + eps)` can cancel
to near zero while its rounding error stays that of the larger terms, so an error relative to each element
would be unbounded. Why float32 units even for float64 constants (the frontend's DFT basis and mel filters):
every part serves FP32 tensors, so a constant that moves by less than float32 resolution cannot change what a
client gets by more than rounding. Why 64: CPU paths differ by 1-2 ULP (see ensemble/README.md), so 64 leaves
a wide margin, while retraining moves weights by orders of magnitude more. The producer version and doc
strings are ignored: they do not change what is computed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

ULP_BUDGET = 64
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # the precision every part serves in (contract: FP32)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # below it (subnormals) CPUs may flush to zero: noise too
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}
_DATA_FIELDS = ("raw_data", "float_data", "double_data", "int32_data")


def float_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Every float tensor of `graph` and its subgraphs in a fixed order: initializers, then attributes."""
    found = [t for t in graph.initializer if t.data_type in _FLOAT_TYPES]
    for node in graph.node:
        for attr in node.attribute:
            tensors = [attr.t] if attr.HasField("t") else list(attr.tensors)
            found += [t for t in tensors if t.data_type in _FLOAT_TYPES]
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found += float_tensors(sub)
    return found


def split_constants(data: bytes) -> tuple[bytes, list[tuple[str, np.ndarray]]]:
    """(the model with float tensor data and cosmetic fields cleared, serialised; those tensors' values)."""
    model = onnx.load_from_string(data)
    values = []
    for tensor in float_tensors(model.graph):
        values.append((tensor.name, numpy_helper.to_array(tensor)))
        for field in _DATA_FIELDS:
            tensor.ClearField(field)
    model.ClearField("producer_version")
    model.ClearField("doc_string")
    model.graph.ClearField("doc_string")
    for node in model.graph.node:
        node.ClearField("doc_string")
    return model.SerializeToString(deterministic=True), values


def tensor_difference(a: np.ndarray, b: np.ndarray) -> str | None:
    """None when `a` and `b` agree within the budget; else why not (for the new version's manifest)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {b.shape} {b.dtype} -> {a.shape} {a.dtype}"
    if np.array_equal(a, b, equal_nan=True):
        return None
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a64) & np.isfinite(b64)
    if not np.array_equal(a64[~finite], b64[~finite], equal_nan=True):
        return "non-finite values differ"
    if not finite.any():
        return None
    delta = float(np.max(np.abs(a64 - b64)[finite]))
    scale = max(float(np.max(np.abs(a64[finite]))), float(np.max(np.abs(b64[finite]))), FLOAT32_TINY)
    allowed = ULP_BUDGET * max(float(np.finfo(a.dtype).eps), FLOAT32_EPS) * scale
    return None if delta <= allowed else f"max |diff| {delta:.3g} > {allowed:.3g}"


def differences(new: bytes, old: bytes) -> list[str]:
    """Why `new` is another model than `old` (empty: the same model up to CPU rounding)."""
    if new == old:
        return []
    new_graph, new_values = split_constants(new)
    old_graph, old_values = split_constants(old)
    if new_graph != old_graph:
        return ["graph structure (nodes, edges, attributes, integer tensors or signature) differs"]
    reasons = []
    for (name, a), (_, b) in zip(new_values, old_values, strict=True):
        why = tensor_difference(a, b)
        if why is not None:
            reasons.append(f"{name}: {why}")
    return reasons
