"""`python -m ensemble.identity_report`: the figures behind graph_diff's tolerance, measured on this machine.

1. How far apart float32 evaluation orders of BatchNorm folding land (scale first or multiply first, a
   reciprocal, an FMA-like float64 rounding): what different CPU code paths do to the exported constants.
2. How a fresh export of the reference on this CPU compares with the committed model_repository/, per part.
Both in float32 units in the last place of each tensor's largest magnitude, the unit of graph_diff.ULP_BUDGET.
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import numpy as np
import torch

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, export, graph_diff, versions
from ensemble.onnx_export import export_part

_CONV = (torch.nn.Conv1d, torch.nn.Conv2d)
_NORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)


def _ulp(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float32 ULP of the larger tensor maximum (0 for identical tensors)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = max(float(np.abs(a64).max()), float(np.abs(b64).max()), graph_diff.FLOAT32_TINY)
    return float(np.abs(a64 - b64).max()) / (graph_diff.FLOAT32_EPS * scale)


def _folds(conv: torch.nn.Module, bn: torch.nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of conv+BN folded in four float32 evaluation orders."""
    w = conv.weight.detach().numpy()
    b = np.zeros(w.shape[0], np.float32) if conv.bias is None else conv.bias.detach().numpy()
    g, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    shape = (-1,) + (1,) * (w.ndim - 1)
    std = np.sqrt(var + np.float32(bn.eps))
    s, r = g / std, np.float32(1) / std
    s64 = g.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.eps)
    return [
        (w * s.reshape(shape), (b - mean) * s + beta),
        ((w * g.reshape(shape)) / std.reshape(shape), beta - (mean - b) * g / std),
        (w * (g * r).reshape(shape), (b - mean) * (g * r) + beta),
        ((w * s64.reshape(shape)).astype(np.float32), ((b - mean) * s64 + beta).astype(np.float32)),
    ]


def fold_spread(model: torch.nn.Module) -> tuple[int, float]:
    """(conv+BN pairs, worst spread in ULP) over every pair of evaluation orders."""
    layers = [m for m in model.modules() if isinstance(m, _CONV + _NORM)]
    pairs = [(c, n) for c, n in itertools.pairwise(layers) if isinstance(c, _CONV) and isinstance(n, _NORM)]
    worst = 0.0
    for conv, bn in pairs:
        for x, y in itertools.combinations(_folds(conv, bn), 2):
            worst = max(worst, _ulp(x[0], y[0]), _ulp(x[1], y[1]))
    return len(pairs), worst


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m ensemble.identity_report",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="Takes no options: it exports the reference on this CPU and prints both figures.",
    ).parse_args(argv)
    warnings.filterwarnings("ignore")
    model, _ = export.load_source(None)
    pairs, worst = fold_spread(model)
    print(f"BatchNorm folding, 4 float32 orders, {pairs} conv+BN pairs: worst {worst:.2f} ULP")
    print(f"fresh export here vs committed {DEFAULT_REPOSITORY.name}/ (budget {graph_diff.ULP_BUDGET} ULP):")
    for spec in contract.PARTS:
        fresh, _ = export_part(model.part(spec.name), spec)
        folder = DEFAULT_REPOSITORY / spec.name / str(versions.latest(DEFAULT_REPOSITORY / spec.name))
        served = (folder / "model.onnx").read_bytes()
        (graph, new), (old_graph, old) = map(graph_diff.split_constants, (fresh, served))
        pairs = zip(new, old, strict=True) if graph == old_graph else []
        spread = max((_ulp(a, b) for (_, a), (_, b) in pairs if a.size), default=0.0)
        reasons = graph_diff.differences(fresh, served)
        verdict = "same part" if not reasons else f"CHANGED: {reasons[:2]}"
        print(f"  {spec.name:<15} bytes equal {fresh == served!s:<5}  worst {spread:.3g} ULP  {verdict}")


if __name__ == "__main__":
    main()
