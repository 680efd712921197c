"""The benchmark's arithmetic and rendering: per-cell statistics, ratios, efficiency, targets, tables.

Pure functions over measured numbers (no servers here), so tests/loadtests/test_bench.py checks them.
A *cell* is one (system, mix, concurrency) measurement; `systems` are "naive" (eager PyTorch in one Ray
Serve deployment), "ort" (the same ONNX graphs run in-process by one deployment, no Triton) and "avpenet"
(gateway + Triton ensemble).

Why one module over 300 lines: one data model (Report, Cell) with its statistics, targets and
renderers (text, markdown, plot), all pure functions the unit tests check together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from loadtests import stagetime

SYSTEMS = ("naive", "ort", "avpenet")
PEERS = ("naive", "ort")  # the systems without Triton: their model runs inside their one replica
SYSTEM_LABELS = {
    "naive": "(a) naive: eager PyTorch, 1 deployment",
    "ort": "(c) ONNX Runtime in one process, no Triton",
    "avpenet": "(b) AVPENet Serve",
}
MIX_LABELS = {
    "model": "model-bound (WAV + landmarks .npz, 3 s)",
    "long": "long (WAV + landmarks .npz, 60 s)",
    "video": "full video path (MP4)",
}

# Process groups CPU time is split into (see classify_process).
GROUPS = ("loadgen", "proxy", "gateway", "features", "naive", "ort", "triton", "ray")

# Targets: (b)/(a) throughput per mix at concurrency 32, and the rest.
TARGET_RATIOS = {"model": 1.3, "long": 3.0, "video": 1.5}
TARGET_RATIO_ORT = 1.0  # (b)/(c) on the model-bound mix
TARGET_CORES_BUSY = 0.90  # share of the cores the stack keeps busy at concurrency 32
TARGET_BATCH = 8.0  # Triton average executed batch at concurrency 32
TARGET_EFFICIENCY = 0.70  # model stage / measured kernel limit
TARGET_FEATURES_MS_PER_S = 60.0  # feature-extraction CPU per second of video
TARGET_CONCURRENCY = 32
# Per CPU-bound mix, the stage of (b) a missed (b)/(a) is set beside: where that mix's CPU goes most (the CPU
# table), and what it is.
RATIO_STAGES = {
    "long": (
        "triton",
        "Triton",
        "a 60-s clip's graphs; `python -m loadtests.triton_cpu --windows 58` times them alone",
    ),
    "video": (
        "features",
        "FeatureExtractor",
        "face tracking, the code every system runs; `--track-every` tracks fewer frames",
    ),
}
RATIO_LIMIT = (
    "every process shares the same cores: (b) wins only what its model stage saves over eager PyTorch minus "
    "what its extra hops cost (see the CPU table)"
)
MODEL_MIXES = ("model", "long")  # no video: the model stage is the work, so efficiency is reported
EXPENSIVE_MODEL = "audio_encoder"  # ~60% of the FLOPs: its batch is the one the target is about


def classify_process(name: str, cmdline: str) -> str:
    """The CPU group of one process of the bench's tree, from its name and command line (Ray proctitles)."""
    text = f"{name} {cmdline}"
    if "tritonserver" in text or "triton_python_backend_stub" in text:
        return "triton"
    if "ServeReplica:avpenet:FeatureExtractor" in text:
        return "features"
    if "ServeReplica:avpenet:Gateway" in text:
        return "gateway"
    if "ServeReplica:naive" in text:
        return "naive"
    if "ServeReplica:ort" in text:
        return "ort"
    if "ProxyActor" in text:
        return "proxy"
    return "ray"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation); NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else math.nan


def ratio(b: float, a: float) -> float:
    return b / a if a and not math.isnan(a) else math.nan


def average_batch(count_delta: float, exec_delta: float) -> float:
    """Triton's average executed batch: inferences / executions (nv_inference_count / _exec_count deltas)."""
    return count_delta / exec_delta if exec_delta > 0 else math.nan


def triton_busy_s(deltas: Mapping[str, Mapping[str, float]], models: Iterable[str]) -> float:
    """Seconds the models computed. Triton adds a batch's compute time to EVERY request in it, so each
    model's nv_inference_compute_infer_duration_us delta is divided by its requests per execution (exact
    when that is constant, close otherwise). Requests, not windows: a 60-s clip is one request of 58 windows
    (runs recorded before request counts were kept fall back to windows per execution)."""
    total = 0.0
    for model in models:
        d = deltas.get(model, {})
        per_exec = d.get("nv_inference_request_success", d.get("nv_inference_count", 0.0))
        batch = average_batch(per_exec, d.get("nv_inference_exec_count", 0.0))
        if not math.isnan(batch):
            total += d.get("nv_inference_compute_infer_duration_us", 0.0) / batch / 1e6
    return total


def efficiency(flops_per_window: float, windows_per_s: float, kernel_gflops: float) -> float:
    """Share of the kernel limit the model stage reaches: FLOPs/window x windows/s / (kernel GFLOP/s)."""
    return flops_per_window * windows_per_s / (kernel_gflops * 1e9) if kernel_gflops > 0 else math.nan


@dataclass
class Cell:
    """One measured (system, mix, concurrency) cell: raw figures; derived ones are properties."""

    system: str
    mix: str
    concurrency: int
    seconds: float  # length of the measured window
    latencies_ms: list[float]  # client-side, requests that completed inside the window
    errors: int
    windows: int  # 3 s windows scored inside the window
    media_seconds: float  # seconds of media scored inside the window
    stages_ms: dict[str, float]  # mean per stage, from the responses' timings_ms
    cpu_s: dict[str, float]  # CPU-seconds per process group (GROUPS) inside the window
    machine_busy_s: float  # CPU-seconds the whole machine was busy inside the window (all processes)
    cores: int
    model_s: float = 0.0  # seconds the model stage computed (Triton compute_infer sum / naive model timings)
    triton: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric deltas
    attempts: int = 1  # measurements taken (a cell disturbed by other users' work is measured again)
    error_kinds: dict[str, int] = field(default_factory=dict)  # failed requests by status / exception
    stage_time: dict[str, dict[str, float]] = field(default_factory=dict)  # stagetime.delta (avpenet cells)
    round: int = 1  # which round of the run (`avpenet bench --rounds N` measures every cell N times)
    cpu_seconds: float = 0.0  # between the CPU snapshots (0: a run saved before it was kept = `seconds`)
    error_ms: dict[str, list[float]] = field(default_factory=dict)  # failed requests' latencies, by kind
    # the gateway's video admission share at the window's start and end ([]: not read, or an older run)
    admit_share: list[float | None] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else math.nan

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.seconds if self.seconds > 0 else math.nan

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def server_cpu_s(self) -> float:
        return sum(v for k, v in self.cpu_s.items() if k != "loadgen")

    @property
    def cpu_s_per_clip(self) -> float:
        return self.server_cpu_s / self.requests if self.requests else math.nan

    @property
    def cpu_capacity_s(self) -> float:
        """Core-seconds the CPU snapshots span: the measured window plus the few ms each snapshot took after
        or before it (the metrics scrapes sit outside); against `seconds` alone a 4-s quick window read
        over 100% busy."""
        return self.cores * (self.cpu_seconds or self.seconds)

    @property
    def cores_busy(self) -> float:
        """Share of the machine's cores the system's processes kept busy (the load generator excluded)."""
        capacity = self.cpu_capacity_s
        return self.server_cpu_s / capacity if capacity else math.nan

    @property
    def loadgen_cpu_s_per_clip(self) -> float:
        return self.cpu_s.get("loadgen", 0.0) / self.requests if self.requests else math.nan

    def cpu_ms_per_clip(self, group: str) -> float:
        """CPU of one process group (GROUPS) per completed clip, ms (the CPU table's cells)."""
        return 1000.0 * self.cpu_s.get(group, 0.0) / self.requests if self.requests else math.nan

    @property
    def features_ms_per_media_s(self) -> float:
        """CPU of the feature stage per second of media: the FeatureExtractor (b; video uploads go there) or
        the peer's one replica (a, c)."""
        group = "features" if self.system == "avpenet" else self.system
        return 1000.0 * self.cpu_s.get(group, 0.0) / self.media_seconds if self.media_seconds else math.nan

    @property
    def other_load(self) -> float:
        """Share of the machine's cores busy with processes outside the bench (other users' work)."""
        ours = sum(self.cpu_s.values())
        capacity = self.cpu_capacity_s
        return max(0.0, self.machine_busy_s - ours) / capacity if capacity else math.nan

    def avg_batch(self, model: str) -> float:
        d = self.triton.get(model, {})
        return average_batch(d.get("nv_inference_count", 0.0), d.get("nv_inference_exec_count", 0.0))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    """Everything one `avpenet bench` run measured."""

    command: str
    when: str
    machine: str
    cores: int
    quick: bool
    flops: dict[str, float]  # per window, per part + "total"
    kernels: list[dict]  # KernelRate as dicts: name, shape, gflops
    parity: dict[str, float]  # mix -> |score(b) - score(a)| on the same clip
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)
    repository: str = "model_repository/ (committed)"  # what Triton served; the naive app runs its weights
    other_rounds: list[Cell] = field(
        default_factory=list
    )  # the rounds not reported in `cells` (median_round)

    @property
    def kernel_limit(self) -> float:
        return max((k["gflops"] for k in self.kernels), default=math.nan)

    def cell(self, system: str, mix: str, concurrency: int) -> Cell | None:
        for c in self.cells:
            if (c.system, c.mix, c.concurrency) == (system, mix, concurrency):
                return c
        return None

    def efficiency(self, cell: Cell) -> float:
        """The issue's figure: model FLOPs per window x end-to-end windows/s / the best kernel rate."""
        return efficiency(self.flops["total"], cell.windows_per_s, self.kernel_limit)

    def in_stage_efficiency(self, cell: Cell) -> float:
        """The same, counting only the time the model stage computed: how well its kernels use the cores."""
        rate = cell.windows / cell.model_s if cell.model_s > 0 else math.nan
        return efficiency(self.flops["total"], rate, self.kernel_limit)

    def mixes(self) -> list[str]:
        return list(dict.fromkeys(c.mix for c in self.cells))

    def concurrencies(self) -> list[int]:
        return sorted({c.concurrency for c in self.cells})


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    measured: str
    met: bool | None  # None: not measured in this run
    limit: str = ""  # what limits it, when missed


def targets(report: Report, c: int = TARGET_CONCURRENCY) -> list[Target]:
    """The targets against this run's cells at concurrency `c` (mixes not measured are left out)."""
    out: list[Target] = []
    for mix in report.mixes():
        out += _mix_targets(report, mix, c)
    b = report.cell("avpenet", "model", c)
    if b:
        batch = b.avg_batch(EXPENSIVE_MODEL)
        out.append(
            Target(
                f"average batch ({EXPENSIVE_MODEL}), model mix, c={c}",
                f">= {TARGET_BATCH:.0f}",
                f"{batch:.1f}",
                batch >= TARGET_BATCH,
                "3 s clips are one window each: a batch of 8 needs 8 requests in Triton's queue at once, "
                "and the CPU-bound stages in front of it release them one by one",
            )
        )
        eff = report.efficiency(b)
        out.append(
            Target(
                f"model-stage efficiency, model mix, c={c}",
                f">= {TARGET_EFFICIENCY:.0%} of {report.kernel_limit:.0f} GFLOP/s",
                f"{eff:.0%} (while computing: {report.in_stage_efficiency(b):.0%})",
                eff >= TARGET_EFFICIENCY,
                "the model stage gets only the CPU the proxy, gateway, feature code and load generator "
                "leave; small per-window kernels and Python-backend hops cost on top",
            )
        )
    v = report.cell("avpenet", "video", c)
    if v:
        ms = v.features_ms_per_media_s
        out.append(
            Target(
                f"video feature extraction CPU at c={c}",
                f"<= {TARGET_FEATURES_MS_PER_S:.0f} ms per s of video",
                f"{ms:.0f} ms per s",
                ms <= TARGET_FEATURES_MS_PER_S,
                "mediapipe's FaceLandmarker on each tracked frame (10 a second unless `--track-every`), the "
                "video's decode and the rest of the feature code (see the notes)",
            )
        )
    return out


def _mix_targets(report: Report, mix: str, c: int) -> list[Target]:
    """Throughput against each peer, p99 against naive and the cores kept busy, for one mix."""
    a, b, o = (report.cell(s, mix, c) for s in ("naive", "avpenet", "ort"))
    if not b:
        return []
    out = [
        Target(
            f"{mix}: cores busy (b) at c={c}",
            f">= {TARGET_CORES_BUSY:.0%}",
            f"{b.cores_busy:.0%}",
            b.cores_busy >= TARGET_CORES_BUSY,
            "requests wait on something other than a core (a hop, a lock, a per-replica cap) while others' "
            "work also holds the shared cores (the `other load` column)" + _others_busy(a, o),
        )
    ]
    if a and mix in TARGET_RATIOS:
        r = ratio(b.throughput, a.throughput)
        out.append(
            Target(
                f"{mix}: throughput (b)/(a) at c={c}",
                f">= {TARGET_RATIOS[mix]:g}x",
                f"{r:.2f}x",
                r >= TARGET_RATIOS[mix],
                ratio_limit(a, b, TARGET_RATIOS[mix]),
            )
        )
    if o and mix == "model":
        r = ratio(b.throughput, o.throughput)
        out.append(
            Target(
                f"{mix}: throughput (b)/(c) at c={c}",
                f">= {TARGET_RATIO_ORT:g}x",
                f"{r:.2f}x",
                r >= TARGET_RATIO_ORT,
                peer_limit(o, b),
            )
        )
    if a:
        out.append(
            Target(
                f"{mix}: p99 (b) < (a) at c={c}",
                "lower",
                f"{b.p99_ms:.0f} ms vs {a.p99_ms:.0f} ms",
                b.p99_ms < a.p99_ms,
                "queueing behind the shared CPU",
            )
        )
    return out


def _others_busy(a: Cell | None, o: Cell | None) -> str:
    """The busy shares naive and the peer kept in the same round and mix: whether the idle share is (b)'s own
    or every system's on this box."""
    shares = [f"{name} {cell.cores_busy:.0%}" for name, cell in (("naive", a), ("the peer", o)) if cell]
    return f"; in the same round: {' and '.join(shares)}" if shares else ""


def ratio_limit(a: Cell, b: Cell, target: float) -> str:
    """Why (b)/(a) falls short of `target`, from the cells' CPU: the CPU per clip the target leaves (b) at the
    two systems' busy shares (clips/s = the cores kept busy / CPU per clip), against what (b)'s heaviest stage
    of that mix spent alone (RATIO_STAGES)."""
    stage = RATIO_STAGES.get(b.mix)
    if stage is None or not (a.requests and b.requests):
        return RATIO_LIMIT
    group, name, what = stage
    allowed_ms = 1000.0 * a.cpu_s_per_clip * b.cores_busy / a.cores_busy / target
    spent_ms = b.cpu_ms_per_clip(group)
    return (
        f"the target leaves (b) {allowed_ms:.0f} ms of CPU per clip (naive's {1000 * a.cpu_s_per_clip:.0f} / "
        f"{target:g}, at the two systems' busy shares); (b)'s {name} alone spent {spent_ms:.0f} ({what})"
    )


def peer_limit(o: Cell, b: Cell) -> str:
    """Why (b)/(c) falls short, split as the throughput ratio splits: clips/s = the cores kept busy / CPU per
    clip, so (b)/(c) is (b)'s busy share over (c)'s times (c)'s CPU per clip over (b)'s (to within the few ms
    the CPU snapshots add to the window)."""
    if not (o.requests and b.requests):
        return RATIO_LIMIT
    ms = Cell.cpu_ms_per_clip
    return (
        f"busy {b.cores_busy:.0%} against (c)'s {o.cores_busy:.0%} "
        f"({ratio(b.cores_busy, o.cores_busy):.2f}x) and {1000 * b.cpu_s_per_clip:.0f} ms of CPU per clip "
        f"against {1000 * o.cpu_s_per_clip:.0f} ({ratio(o.cpu_s_per_clip, b.cpu_s_per_clip):.2f}x): (b)'s "
        f"gateway {ms(b, 'gateway'):.0f}, Triton {ms(b, 'triton'):.0f}, proxy {ms(b, 'proxy'):.0f}, Ray "
        f"{ms(b, 'ray'):.0f} against (c)'s one replica {ms(o, 'ort'):.0f} (the same feature code and "
        f"graphs), proxy {ms(o, 'proxy'):.0f}, Ray {ms(o, 'ray'):.0f}"
    )


def cpu_bound(report: Report, mix: str = "model", c: int = TARGET_CONCURRENCY) -> dict[str, float] | None:
    """Where (b)'s CPU goes and the best (b)/(a) a CPU-bound box allows, even with a free model stage.

    On a machine where every stage shares the same cores, throughput ~ available cores / CPU-s per clip, so
    (b)/(a) <= cpu(a) / (cpu(b) - cpu(b's model stage)).
    """
    a, b = report.cell("naive", mix, c), report.cell("avpenet", mix, c)
    if not (a and b and a.requests and b.requests):
        return None
    model = b.cpu_s.get("triton", 0.0) / b.requests
    rest = b.cpu_s_per_clip - model
    return {
        "cpu_a": a.cpu_s_per_clip,
        "cpu_b": b.cpu_s_per_clip,
        "model_b": model,
        "rest_b": rest,
        "cpu_ratio": ratio(a.cpu_s_per_clip, b.cpu_s_per_clip),
        "bound": ratio(a.cpu_s_per_clip, rest),
    }


# --- rendering --------------------------------------------------------------------------------------------
def _f(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def cell_rows(report: Report) -> list[list[str]]:
    """One row per cell, columns as HEADER."""
    rows = []
    for mix in report.mixes():
        for c in report.concurrencies():
            a, o = report.cell("naive", mix, c), report.cell("ort", mix, c)
            for system in SYSTEMS:
                cell = report.cell(system, mix, c)
                if cell is None:
                    continue
                rows.append(
                    [
                        mix,
                        str(c),
                        system,
                        _f(cell.throughput, ".1f"),
                        _f(ratio(cell.throughput, a.throughput), ".2f") if system != "naive" and a else "",
                        _f(ratio(cell.throughput, o.throughput), ".2f") if system == "avpenet" and o else "",
                        _f(cell.p50_ms, ".0f"),
                        _f(cell.p99_ms, ".0f"),
                        _f(cell.avg_batch(EXPENSIVE_MODEL), ".1f") if system == "avpenet" else "",
                        _f(cell.cpu_s_per_clip, ".3f"),
                        _f(100 * cell.cores_busy, ".0f"),
                        _f(cell.loadgen_cpu_s_per_clip, ".3f"),
                        _f(100 * report.efficiency(cell), ".0f") if mix in MODEL_MIXES else "",
                        _f(100 * cell.other_load, ".0f"),
                        str(cell.errors),
                    ]
                )
    return rows


HEADER = [
    "mix", "c", "system", "clips/s", "(b)/(a)", "(b)/(c)", "p50 ms", "p99 ms", "avg batch",
    "server CPU-s/clip", "cores busy %", "loadgen CPU-s/clip", "model eff %", "other load %", "errors",
]  # fmt: skip


def text_table(report: Report) -> str:
    return text_table_of([HEADER, *cell_rows(report)])


def text_table_of(rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned plain-text columns; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def stage_rows(report: Report) -> list[list[str]]:
    stages = list(dict.fromkeys(s for c in report.cells for s in c.stages_ms))
    rows = []
    for c in report.cells:
        rows.append(
            [c.mix, str(c.concurrency), c.system, *(_f(c.stages_ms.get(s, math.nan), ".1f") for s in stages)]
        )
    return [["mix", "c", "system", *(f"{s} ms" for s in stages)], *rows]


def cpu_rows(report: Report) -> list[list[str]]:
    rows = []
    for c in report.cells:
        per = [_f(c.cpu_ms_per_clip(g), ".0f") if c.requests else "-" for g in GROUPS]
        rows.append([c.mix, str(c.concurrency), c.system, *per, _f(c.features_ms_per_media_s, ".0f")])
    return [
        ["mix", "c", "system", *(f"{g} ms" for g in GROUPS), "feature CPU ms per s of media"],
        *rows,
    ]


def batch_rows(report: Report) -> list[list[str]]:
    models = sorted({m for c in report.cells for m in c.triton})
    rows = [
        [c.mix, str(c.concurrency), *(_f(c.avg_batch(m), ".1f") for m in models)]
        for c in report.cells
        if c.system == "avpenet"
    ]
    return [["mix", "c", *models], *rows]


def capacity_rows(
    report: Report, beds: Sequence[int] = (10, 50, 200), utilisation: float = 0.6
) -> list[list[str]]:
    """Cores for N beds, each needing one 3 s window scored per second, at a target utilisation of the cores.

    A request of W windows serves W bed-seconds (windows hop 1 s): a 3-s clip is sent every second, a 60-s
    clip (58 windows) once per 58 s. From the server CPU-seconds per request measured at c=32 (model-bound:
    privacy mode, landmarks from the bedside; video: MP4 uploads, face tracking in the FeatureExtractor).
    """
    rows = []
    for mix in report.mixes():
        cell = report.cell("avpenet", mix, TARGET_CONCURRENCY) or next(
            (c for c in reversed(report.cells) if c.system == "avpenet" and c.mix == mix), None
        )
        if cell is None or not cell.requests or not cell.windows:
            continue
        per_request = cell.server_cpu_s / cell.requests
        windows = cell.windows / cell.requests
        per_bed_s = per_request / windows  # CPU-seconds per bed per second
        model = cell.cpu_s.get("triton", 0.0) / cell.requests
        rows.append(
            [
                mix,
                f"{per_request:.3f}",
                f"{windows:.0f}",
                f"{model:.3f}",
                *(f"{math.ceil(n * per_bed_s / utilisation)}" for n in beds),
            ]
        )
    header = ["mix", "CPU-s per request", "windows per request", "of which Triton"]
    return [[*header, *(f"cores for {n} beds" for n in beds)], *rows]


def median_round(rounds: Sequence[Sequence[Cell]]) -> tuple[list[Cell], list[Cell]]:
    """(reported cells, the other rounds' cells): per (mix, concurrency) the round whose (b)/(a) is the
    median (the lower of the middle two for an even count), its three systems kept together, since a round's
    cells were measured minutes apart on the same machine state and a ratio across rounds would mix states."""
    chosen: list[Cell] = []
    others: list[Cell] = []
    keys = list(dict.fromkeys((c.mix, c.concurrency) for cells in rounds for c in cells))
    for mix, c in keys:
        per_round = [[x for x in cells if (x.mix, x.concurrency) == (mix, c)] for cells in rounds]
        per_round = [cells for cells in per_round if cells]

        def b_over_a(cells: list[Cell]) -> float:
            tp = {x.system: x.throughput for x in cells}
            r = ratio(tp.get("avpenet", math.nan), tp.get("naive", math.nan))
            return -math.inf if math.isnan(r) else r

        ordered = sorted(range(len(per_round)), key=lambda i: b_over_a(per_round[i]))
        pick = ordered[(len(ordered) - 1) // 2]
        for i, cells in enumerate(per_round):
            (chosen if i == pick else others).extend(cells)
    return chosen, others


def round_rows(report: Report) -> list[list[str]]:
    """Every round's ratios per mix, the reported (median) one marked: the run's own spread."""
    rows = [["mix", "c", "round", "clips/s (a)", "clips/s (c)", "clips/s (b)", "(b)/(a)", "(b)/(c)",
             "cores busy (b) %", "other load % (b)", "reported"]]  # fmt: skip
    every = sorted([*report.cells, *report.other_rounds], key=lambda x: (x.mix, x.concurrency, x.round))
    reported = {(x.mix, x.concurrency, x.round) for x in report.cells}
    for key in dict.fromkeys((x.mix, x.concurrency, x.round) for x in every):
        tp = {x.system: x for x in every if (x.mix, x.concurrency, x.round) == key}
        a, c, b = (tp.get(s) for s in ("naive", "ort", "avpenet"))
        if a is None or c is None or b is None:
            continue
        rows.append([
            key[0], str(key[1]), str(key[2]), _f(a.throughput, ".1f"), _f(c.throughput, ".1f"),
            _f(b.throughput, ".1f"), _f(ratio(b.throughput, a.throughput), ".2f"),
            _f(ratio(b.throughput, c.throughput), ".2f"), _f(100 * b.cores_busy, ".0f"),
            _f(100 * b.other_load, ".0f"), "yes" if key in reported else "",
        ])  # fmt: skip
    return rows


def _md_rounds(report: Report) -> list[str]:
    if not report.other_rounds:
        return []
    header, rows = _split(round_rows(report))
    return [
        "## Rounds",
        "",
        "Every cell was measured once per round, the three systems interleaved in each; the tables above "
        "report, per mix, the round whose (b)/(a) is the median, its three systems together. The spread "
        "between rounds is what one ratio of this run is worth.",
        "",
        markdown_table(header, rows),
        "",
    ]


def markdown(report: Report, plot_path: str | None = None) -> str:
    """docs/BENCHMARKS.md: setup, results, targets with what limits them, model stage, per-stage tables."""
    sections = (
        _md_setup(report),
        _md_results(report, plot_path),  # ends with the Targets heading: the targets table follows it
        _md_targets(report),
        _md_rounds(report),
        _md_limits(report),
        _md_model_stage(report),
        stagetime.markdown_lines(report.cells, markdown_table),
        _md_notes(report),
    )
    return "\n".join(line for section in sections for line in section)


def _md_setup(report: Report) -> list[str]:
    lines = [
        "# Benchmarks: naive eager PyTorch, one-process ONNX Runtime and AVPENet Serve",
        "",
        "Generated by `avpenet bench` (loadtests/bench.py); do not edit by hand, re-run it.",
        "",
        f"- Command: `{report.command}`",
        f"- When: {report.when}; machine: {report.machine}; {report.cores} cores shared by the load "
        "generator, Ray Serve and Triton (and, on this shared box, by other users' work: the "
        "`other load %` column).",
        f"- Mode: {'quick (a few seconds per cell)' if report.quick else 'default'}. Same clips, same "
        "machine, the systems deployed side by side behind the same Ray Serve HTTP proxy; cells interleaved "
        "(naive, ONNX Runtime peer, AVPENet Serve at each concurrency). Closed-loop HTTP clients (asyncio + "
        "aiohttp) in the bench process.",
        "- (a) naive: one Ray Serve deployment (1 replica) that parses the upload, runs the same feature "
        "code and calls the PyTorch model eagerly per request (no Triton, no batching across requests). "
        "(c) ONNX Runtime peer: the same single deployment, but it chains the four ONNX graphs Triton serves "
        "in-process with onnxruntime (no Triton, no batching across requests). "
        "(b) AVPENet Serve: Gateway + FeatureExtractor deployments + Triton ensemble (ONNX Runtime, "
        "dynamic batching), the repo's serve_config.yaml with one replica each.",
        f"- Model: {report.repository}.",
        "- Same answer: the largest |score(x) - score(a)| of the other systems on the same clip: "
        + ", ".join(f"{m} {d:.1e}" for m, d in report.parity.items())
        + ".",
        "",
    ]
    return lines


def _md_results(report: Report, plot_path: str | None) -> list[str]:
    lines: list[str] = []
    if plot_path:
        lines += [f"![throughput and p99 latency]({plot_path})", ""]
    lines += ["## Results", "", markdown_table(HEADER, cell_rows(report)), ""]
    lines += [
        "`clips/s`: completed requests per second (a 3 s clip is one window, a 60 s `long` clip 58); "
        "`(b)/(a)`, `(b)/(c)`: throughput against the naive app and the ONNX Runtime peer; p50/p99: "
        "client-side latency; "
        "`avg batch`: Triton's nv_inference_count / nv_inference_exec_count delta of "
        f"`{EXPENSIVE_MODEL}`; `server CPU-s/clip`: CPU time of every stack process (psutil) / clips; `cores "
        "busy`: that CPU time / (cores x seconds), the share of the machine the system kept working; "
        "`loadgen`: the bench process itself (client + Ray driver); `model eff`: model FLOPs per window x "
        "windows/s / best kernel rate; `other load`: machine CPU busy outside the bench's processes.",
        "",
        "## Targets",
        "",
    ]
    return lines


def _md_limits(report: Report) -> list[str]:
    bound = cpu_bound(report)
    analysis = []
    if bound:
        analysis = [
            "## What limits AVPENet Serve on this machine",
            "",
            f"Every process shares the same {report.cores} cores, so throughput ~ free cores / server "
            f"CPU per clip. On the model-bound path at c={TARGET_CONCURRENCY}, (a) spends "
            f"{1000 * bound['cpu_a']:.0f} ms of CPU per clip and (b) {1000 * bound['cpu_b']:.0f} ms, of "
            f"which only {1000 * bound['model_b']:.0f} ms ({bound['model_b'] / bound['cpu_b']:.0%}) is the "
            f"model stage (Triton + ONNX Runtime); the other {1000 * bound['rest_b']:.0f} ms is HTTP "
            "proxying, multipart parsing, the npz and window code (in the Gateway replica: only video takes "
            "the Ray hop to the FeatureExtractor), the gRPC call and the JSON answer. Even with a free model "
            "stage (b) could "
            f"reach at most **{bound['bound']:.1f}x** (a) here on 3 s clips: batching pays where a request "
            "carries many windows (the `long` mix) or where the model dominates a request's cost (a GPU pod "
            "behind many gateway cores), not where every window comes with its own HTTP request.",
            "",
        ]
    return analysis


def _md_targets(report: Report) -> list[str]:
    lines: list[str] = []
    target_rows = [
        [
            t.name,
            t.wanted,
            t.measured,
            {True: "met", False: "MISSED", None: "-"}[t.met],
            "" if t.met else t.limit,
        ]
        for t in targets(report)
    ]
    lines += [markdown_table(["target", "wanted", "measured", "", "what limits it"], target_rows), ""]
    return lines


def _md_model_stage(report: Report) -> list[str]:
    k = {x["name"]: x for x in report.kernels}
    lines: list[str] = []
    lines += ["## Model stage: FLOPs and the kernel limit", ""]
    lines += [
        "FLOPs per 3 s window (torch.utils.flop_counter.FlopCounterMode, 1 multiply-add = 2 FLOPs): "
        + ", ".join(f"{n} {v / 1e6:.0f} M" for n, v in report.flops.items() if n != "total")
        + f"; total **{report.flops['total'] / 1e9:.3f} GFLOP**. (Counted on the PyTorch model, whose "
        "log-mel DFT runs in fp64; all FLOPs are counted against the fp32 limit, and the served "
        "frontend's DFT is fp32 or fp64 as ensemble/precision.json chooses.)",
        "",
        markdown_table(
            ["kernel (fp32, model's own shape, all cores)", "shape", "GFLOP/s"],
            [[n, x["shape"], f"{x['gflops']:.1f}"] for n, x in k.items()],
        ),
        "",
        f"Limit = the larger: **{report.kernel_limit:.1f} GFLOP/s** -> at most "
        f"{report.kernel_limit * 1e9 / report.flops['total']:.0f} windows/s on this machine in this run.",
        "",
        "## Triton average executed batch per model",
        "",
        markdown_table(*_split(batch_rows(report))),
        "",
        "## Per-stage time (mean ms per request, from each response's `timings_ms`)",
        "",
        "AVPENet Serve: `queue` (a video's wait for its turn at the FeatureExtractor, inside the gateway), "
        "`decode` (a separate audio upload / landmarks file), `features` (video decode + "
        "face tracking + windows; an MP4's sound is decoded in the same demux pass, so it counts here), "
        "`triton` (the ensemble call), `total` (inside the gateway). Naive: the same feature "
        "stages, then "
        "`model` (eager PyTorch). The gap between `total` and the client's latency is the proxy, Ray's "
        "handle hops and queueing.",
        "",
        markdown_table(*_split(stage_rows(report))),
        "",
        "## CPU per clip by process group (ms of CPU per clip)",
        "",
        markdown_table(*_split(cpu_rows(report))),
        "",
        "## Capacity (see docs/DEPLOY.md)",
        "",
        markdown_table(*_split(capacity_rows(report))),
        "",
        "One window scored per second per bed (a request of W windows serves a bed for W seconds: the `long` "
        "mix's 60-s clip is sent every 58 s, a 3-s clip every second); cores at 60% utilisation; the "
        "gateway's CPU stages stay on CPU even when Triton moves to a GPU.",
        "",
    ]
    return lines


def _md_notes(report: Report) -> list[str]:
    lines: list[str] = []
    if report.notes:
        lines += ["## Notes on this run", "", *(f"- {n}" for n in report.notes), ""]
    return lines


def _split(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    return rows[0], rows[1:]


def plot(report: Report, path: Path) -> Path:
    """Throughput and p99 latency vs concurrency, one column per mix, both systems."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = report.mixes()
    fig, axes = plt.subplots(2, len(mixes), figsize=(5.5 * len(mixes), 7), squeeze=False)
    for j, mix in enumerate(mixes):
        for system, style in zip(SYSTEMS, ("o--", "^:", "s-"), strict=True):
            cells = [c for c in report.cells if c.system == system and c.mix == mix]
            cells.sort(key=lambda c: c.concurrency)
            xs = [c.concurrency for c in cells]
            axes[0][j].plot(xs, [c.throughput for c in cells], style, label=SYSTEM_LABELS[system])
            axes[1][j].plot(xs, [c.p99_ms for c in cells], style, label=SYSTEM_LABELS[system])
        axes[0][j].set_title(MIX_LABELS.get(mix, mix))
        axes[0][j].set_ylabel("clips/s")
        axes[1][j].set_ylabel("p99 latency (ms)")
        axes[1][j].set_yscale("log")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xscale("log", base=2)
            ax.set_xticks(report.concurrencies(), [str(c) for c in report.concurrencies()])
            ax.set_xlabel("concurrent clients")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"avpenet bench: {report.machine}, {report.when}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cell_from_dict(data: Mapping) -> Cell:
    return Cell(**dict(data))


def report_from_dict(data: Mapping) -> Report:
    """A Report from its JSON form (docs/img/bench.json), to re-render without measuring again."""
    fields = {k: v for k, v in data.items() if k not in ("cells", "other_rounds")}
    others = [cell_from_dict(c) for c in data.get("other_rounds", [])]
    return Report(**fields, cells=[cell_from_dict(c) for c in data["cells"]], other_rounds=others)
