"""Bench results built by hand (`loadtests.benchreport` Cells and Reports) for the bench's table, ratio and
report tests: plausible figures for a 2-core box, any field overridable."""

from __future__ import annotations

from loadtests import benchreport as br


def make_cell(system="avpenet", mix="model", c=32, *, n=100, seconds=10.0, **kw) -> br.Cell:
    """One measured cell: `n` requests (latencies 1..n ms) in `seconds`; `kw` replaces any other field."""
    base = dict(
        system=system,
        mix=mix,
        concurrency=c,
        seconds=seconds,
        latencies_ms=[float(i) for i in range(1, n + 1)],
        errors=0,
        windows=n,
        media_seconds=3.0 * n,
        stages_ms={"decode": 2.0, "total": 30.0},
        cpu_s={"loadgen": 1.0, "gateway": 2.0, "triton": 3.0, "features": 1.5},
        machine_busy_s=10.0,
        cores=2,
        model_s=2.0,
        triton={"audio_encoder": {"nv_inference_count": 320.0, "nv_inference_exec_count": 32.0}},
    )
    base.update(kw)
    return br.Cell(**base)


def make_report(naive_rps: float, avpenet_rps: float) -> br.Report:
    """A quick run's report: naive and avpenet at concurrency 1 and 32 on the model and video mixes."""
    cells = []
    for mix in ("model", "video"):
        for c in (1, 32):
            cells.append(make_cell("naive", mix, c, n=int(naive_rps * 10), triton={}))
            cells.append(make_cell("avpenet", mix, c, n=int(avpenet_rps * 10)))
    return br.Report(
        command="avpenet bench --quick",
        when="now",
        machine="test box",
        cores=2,
        quick=True,
        flops={
            "audio_frontend": 1e8,
            "audio_encoder": 2.5e8,
            "visual_encoder": 1e7,
            "fusion": 8e7,
            "total": 4.4e8,
        },
        kernels=[
            {"name": "matmul", "shape": "a", "gflops": 50.0},
            {"name": "conv3x3", "shape": "b", "gflops": 80.0},
        ],
        parity={"model": 1e-6, "video": 2e-6},
        cells=cells,
    )
