"""The model's FLOPs per window and the best kernel rate this CPU reaches on the model's own shapes.

Efficiency of the model stage = FLOPs per window x windows/s / kernel rate. The rate is measured in the same
run as the load (a shared 2-core box changes speed with its neighbours), on the two kernels the model is made
of: the heaviest fp32 3x3 convolution of the audio encoder and the heaviest matmul (the log-mel DFT, or a
fusion projection if that is larger), both at a Triton-sized batch. The larger rate is the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from avpenet import cpus

KERNEL_BATCH = 32  # windows per kernel call: what Triton's dynamic batcher forms at concurrency 32


@dataclass(frozen=True)
class KernelRate:
    name: str  # "matmul" or "conv3x3"
    shape: str  # human-readable shape at KERNEL_BATCH
    gflops: float  # best measured rate, GFLOP/s (1 multiply-add = 2 FLOPs)


def _example_inputs(batch: int):
    import torch

    from avpenet import contract

    return {
        spec.name: (
            torch.zeros((batch, *spec.shape), dtype=torch.int64)
            if spec.dtype == "INT64"
            else torch.randn((batch, *spec.shape), generator=torch.Generator().manual_seed(0))
        )
        for spec in contract.MODEL_INPUTS  # the PyTorch model's inputs: windows
    }


def flops_per_window(model, batch: int = 4) -> dict[str, float]:
    """{part name: FLOPs of one window} by torch's FlopCounterMode (matmul, conv, bmm), plus 'total'."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from avpenet import contract

    inputs = _example_inputs(batch)
    inputs[contract.FRAME_MASK.name] = torch.ones_like(inputs[contract.FRAME_MASK.name])
    inputs[contract.AUDIO_PRESENT.name] = torch.ones_like(inputs[contract.AUDIO_PRESENT.name])
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops() / batch
    out = {}
    for spec in contract.PARTS[:-1]:
        key = f"{type(model).__name__}.{spec.name}"
        out[spec.name] = sum(counts.get(key, {}).values()) / batch
    # The frontend (`windows`) and the fusion (`predict`) run through methods, not `__call__`, so the counter
    # files their ops under the root module: the frontend is counted on its own, the fusion is the rest.
    with torch.inference_mode(), FlopCounterMode(display=False) as frontend:
        model.audio_frontend.windows(inputs[contract.WAVEFORM.name])
    out[contract.AUDIO_FRONTEND.name] = frontend.get_total_flops() / batch
    out[contract.FUSION.name] = total - sum(out.values())
    out["total"] = total
    return out


def heaviest_shapes(model) -> tuple[tuple[int, int, int, int, int], tuple[int, int, int]]:
    """((c_in, h, w, c_out, stride) of the costliest 3x3 conv, (m, k, n) of the top matmul), 1 window."""
    import torch
    from torch import nn

    from avpenet import contract

    convs: list[tuple[float, tuple[int, int, int, int, int]]] = []
    mms: list[tuple[float, tuple[int, int, int]]] = []

    def on_conv(mod, args, out):
        _, c_in, h, w = args[0].shape
        flops = 2.0 * out.numel() * c_in * mod.kernel_size[0] * mod.kernel_size[1]
        convs.append((flops, (c_in, h, w, mod.out_channels, mod.stride[0])))

    def on_linear(mod, args, out):
        m = args[0].numel() // args[0].shape[-1]
        mms.append((2.0 * m * mod.in_features * mod.out_features, (m, mod.in_features, mod.out_features)))

    hooks = [
        mod.register_forward_hook(on_conv if isinstance(mod, nn.Conv2d) else on_linear)
        for mod in model.modules()
        if (isinstance(mod, nn.Conv2d) and tuple(mod.kernel_size) == (3, 3)) or isinstance(mod, nn.Linear)
    ]
    try:
        with torch.inference_mode():
            model(**_example_inputs(1))
    finally:
        for h in hooks:
            h.remove()
    n_freq2 = 2 * (contract.N_FFT // 2 + 1)  # the log-mel DFT: frames x N_FFT @ N_FFT x (cos | sin)
    dft = (contract.MEL_FRAMES, contract.N_FFT, n_freq2)
    mms.append((2.0 * dft[0] * dft[1] * dft[2], dft))
    return max(convs)[1], max(mms)[1]


def best_rate(fn: Callable[[], object], flops: float, seconds: float) -> float:
    """Best GFLOP/s of `fn` over repeated timed calls for about `seconds` (after one warm-up call)."""
    fn()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return flops / best / 1e9


def measure(model, seconds: float = 2.0, batch: int = KERNEL_BATCH) -> list[KernelRate]:
    """fp32 matmul and 3x3 conv rates on the model's own (heaviest) shapes, all cores, best of many calls."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(cpus.available())
    try:
        (c_in, h, w, c_out, stride), (m, k, n) = heaviest_shapes(model)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, c_in, h, w, generator=gen)
        weight = torch.randn(c_out, c_in, 3, 3, generator=gen)
        h_out, w_out = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
        conv_flops = 2.0 * batch * c_out * h_out * w_out * c_in * 9
        a = torch.randn(batch * m, k, generator=gen)
        b = torch.randn(k, n, generator=gen)
        with torch.inference_mode():
            conv = best_rate(lambda: F.conv2d(x, weight, stride=stride, padding=1), conv_flops, seconds)
            mm = best_rate(lambda: torch.matmul(a, b), 2.0 * batch * m * k * n, seconds)
    finally:
        torch.set_num_threads(threads)
    return [
        KernelRate("matmul", f"({batch * m}x{k}) @ ({k}x{n})", mm),
        KernelRate("conv3x3", f"{batch}x{c_in}x{h}x{w} -> {c_out} ch, stride {stride}", conv),
    ]
