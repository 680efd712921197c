"""`avpenet bench`: naive eager PyTorch, one-process ONNX Runtime and AVPENet Serve, same clips, side by side.

One run starts the local stack (Triton + the gateway app, preprocess_service.stack.LocalStack), deploys the
naive baseline (loadtests.baseline) and the ONNX Runtime peer (loadtests.ort_peer) as two more Serve apps
behind the same proxy, checks that all give the
same score on the same clip, measures the model's FLOPs and the kernel limit, then for each mix and
concurrency (1, 8, 32) measures the three systems back to back with closed-loop asyncio +
aiohttp clients. Per cell it records client latency, throughput, the responses' per-stage timings, CPU time
of every process of the bench's tree by group (psutil; the load generator is separated, and machine-wide CPU
tells how busy the box was with other work), Triton's metric deltas (average batch, compute time) and, for
AVPENet Serve, where a request's time went: Triton's queue and compute time per model and the gateway's stage
histogram, read before and after the measured window (loadtests/stagetime.py). The report goes to stdout
and, outside --quick, to docs/BENCHMARKS.md with a PNG plot in docs/img/.

Why one module over 300 lines: the run's orchestration, the clients and the per-cell measurement share
one state (the stack, the CPU meter, the payloads); the arithmetic and rendering live in benchreport.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import time
import urllib.error
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from avpenet.argtypes import positive_int, positive_ints, positive_number
from ensemble.client import metrics_delta, read_metrics
from loadtests import benchreport as br
from loadtests import clips, host, stagetime
from preprocess_service.video_admission import MediaSecondsLimiter

HELP = "Benchmark naive PyTorch, an ONNX Runtime app and AVPENet Serve (throughput, p50/p99, CPU, batch)."
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCS = PROJECT_ROOT / "docs"
MARKDOWN = DOCS / "BENCHMARKS.md"
PLOT = DOCS / "img" / "bench.png"
RAW = DOCS / "img" / "bench.json"
CONCURRENCIES = (1, 8, 32)
MIXES = ("model", "long", "video")
TIMEOUT_S = 120.0
RETRY_OTHER_LOAD = 0.3  # a cell measured while others' work held more of the cores is measured again
RETRIES_WHEN_BUSY = 1  # ... once (default mode), keeping the less disturbed measurement
PARITY_TOL = 1e-3  # |score(b) - score(a)| allowed on the same clip (ORT vs PyTorch fp32)
ADMIT_SHARE_DEFAULT = MediaSecondsLimiter.ADMIT_SHARE  # the video admission's share before any backoff
BENCH_LIMITS = {"max_in_flight": 64}  # the gateway's per-replica admission bound (16) would 429 at c=32


@dataclass(frozen=True)
class Timing:
    """Measured window per cell: at least `warmup_s` and one full round of requests before it; then at least
    `measure_s` and until `min_requests`, and `min_rounds` requests per client, finished in it (capped at
    `measure_max_s`). A cell of 60-s clips, whose requests each take longer than a quick window, still
    measures a rate instead of none. Rounds: closed-loop clients that start together finish in waves, and a
    window holding one or two waves counts a whole wave more or less (the long mix's (b)/(a) read 1.1-1.5x
    over five 30-s runs on one day); with four rounds per client one wave is at most a quarter of the count.
    A refused request (429) counts as a round: its client came back for another one."""

    warmup_s: float
    measure_s: float
    warmup_max_s: float
    min_requests: int = 8
    measure_max_s: float = 120.0
    min_rounds: float = 0.0

    def requests_needed(self, concurrency: int) -> int:
        return max(self.min_requests, math.ceil(self.min_rounds * concurrency))


QUICK = Timing(warmup_s=1.0, measure_s=4.0, warmup_max_s=15.0, min_requests=8, measure_max_s=60.0)
DEFAULT = Timing(
    warmup_s=2.0, measure_s=15.0, warmup_max_s=30.0, min_requests=16, measure_max_s=150.0, min_rounds=4.0
)


# --- CPU accounting ----------------------------------------------------------------------------------------
class CpuMeter:
    """CPU time of the bench process and all its descendants (Triton + stubs, Ray + replicas), by group."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.cores = psutil.cpu_count() or 1
        self._groups: dict[tuple[int, float], str] = {}

    def _group(self, proc) -> str:
        key = (proc.pid, proc.create_time())
        if key not in self._groups:
            if proc.pid == self.me.pid:
                self._groups[key] = "loadgen"
            else:
                self._groups[key] = br.classify_process(proc.name(), " ".join(proc.cmdline()[:3]))
        return self._groups[key]

    def snapshot(self) -> tuple[dict[tuple[int, float], tuple[str, float]], float]:
        """({(pid, start time): (group, CPU-s)}, machine busy CPU-s)."""
        out = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    out[(proc.pid, proc.create_time())] = (self._group(proc), t.user + t.system)
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
        m = self.psutil.cpu_times()
        busy = (
            sum(m)
            - m.idle
            - getattr(m, "iowait", 0.0)
            - getattr(m, "guest", 0.0)
            - getattr(m, "guest_nice", 0.0)
        )
        return out, busy

    @staticmethod
    def delta(start, end) -> tuple[dict[str, float], float]:
        groups = dict.fromkeys(br.GROUPS, 0.0)
        for key, (group, cpu) in end[0].items():
            before = start[0].get(key, (group, 0.0))[1]
            groups[group] = groups.get(group, 0.0) + max(0.0, cpu - before)
        return groups, end[1] - start[1]


# --- load generation ---------------------------------------------------------------------------------------
@dataclass
class Done:
    t_end: float
    latency_ms: float
    ok: bool
    windows: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    detail: str = ""  # why it failed
    retry_after_s: float = 0.0  # the refusal's Retry-After: the client waits that long, as the SDK does


def payload(clip_dir: Path, mix: str) -> list[tuple[str, str, bytes, str]]:
    """[(field, filename, bytes, content type)] of the mix's one request kind (the bench mixes have one)."""
    manifest = json.loads((clip_dir / "manifest.json").read_text())
    (kind,) = clips.MIXES[mix]
    return [
        (f, name, (clip_dir / name).read_bytes(), clips.CONTENT_TYPES[Path(name).suffix])
        for f, name in manifest[kind].items()
    ]


async def post(session, url: str, parts: list[tuple[str, str, bytes, str]]) -> Done:
    import aiohttp

    form = aiohttp.FormData()
    for f, name, data, ctype in parts:
        form.add_field(f, data, filename=name, content_type=ctype)
    form.add_field("age_group", "neonate")
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=form) as response:
            body = await response.read()
            status = response.status
            wait = response.headers.get("Retry-After", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        t1 = time.perf_counter()
        return Done(t1, (t1 - t0) * 1000.0, False, detail=repr(exc))
    t1 = time.perf_counter()
    if status != 200:  # refusals stay errors, by kind; a Retry-After is honoured before the next request
        wait_s = float(wait) if wait.replace(".", "", 1).isdigit() else 0.0
        return Done(
            t1, (t1 - t0) * 1000.0, False, detail=f"HTTP {status}: {body[:300]!r}", retry_after_s=wait_s
        )
    answer = json.loads(body)
    return Done(t1, (t1 - t0) * 1000.0, True, len(answer.get("timeline", [])), answer.get("timings_ms", {}))


async def closed_loop(
    url: str,
    parts: list[tuple[str, str, bytes, str]],
    concurrency: int,
    timing: Timing,
    on_start: Callable[[], object],
    on_end: Callable[[], object],
) -> tuple[list[Done], float, float, object, object]:
    """`concurrency` clients each posting back to back; returns (done, t0, t1, on_start(), on_end()).

    Warm-up lasts `warmup_s` and until every client finished one request (capped at `warmup_max_s`), so the
    measured window starts with the pipeline full. Requests still running at t1 are awaited but not counted.
    """
    import aiohttp

    done: list[Done] = []
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            while not stop.is_set():
                done.append(await post(session, url, parts))
                if done[-1].retry_after_s:  # a refused client backs off as told (sdk.py does the same)
                    await asyncio.sleep(min(done[-1].retry_after_s, TIMEOUT_S))

        tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
        begin = time.perf_counter()
        while True:
            await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - begin
            if elapsed >= timing.warmup_max_s or (elapsed >= timing.warmup_s and len(done) >= concurrency):
                break
        start_state = on_start()
        t0 = time.perf_counter()
        await asyncio.sleep(timing.measure_s)
        need = timing.requests_needed(concurrency)
        while (
            time.perf_counter() - t0 < timing.measure_max_s and sum(1 for d in done if d.t_end >= t0) < need
        ):
            await asyncio.sleep(0.1)
        t1 = time.perf_counter()
        end_state = on_end()
        stop.set()
        await asyncio.gather(*tasks)
    return [d for d in done if t0 <= d.t_end <= t1], t0, t1, start_state, end_state


def measure_cell(
    *,
    system: str,
    mix: str,
    url: str,
    parts: list[tuple[str, str, bytes, str]],
    concurrency: int,
    timing: Timing,
    meter: CpuMeter,
    triton_metrics_url: str | None,
    media_seconds_per_clip: float,
    stage_urls: tuple[str | None, ...] = (),
) -> br.Cell:
    """One cell; `stage_urls` (Triton's and the gateway's metrics) are read around the window for the
    per-stage breakdown of AVPENet Serve cells (loadtests/stagetime.py)."""
    staged = stage_urls if system == "avpenet" else ()

    def snap():  # with the CPU snapshot's own time: the scrapes after it are not part of the CPU window
        at, cpu = time.perf_counter(), meter.snapshot()
        return cpu, triton_counters(triton_metrics_url), stagetime.scrape(staged), at

    done, t0, t1, start, end = asyncio.run(closed_loop(url, parts, concurrency, timing, snap, snap))
    ok = [d for d in done if d.ok]
    cpu, busy = CpuMeter.delta(start[0], end[0])
    triton = triton_delta(start[1], end[1]) if system == "avpenet" else {}
    stages = sorted({k for d in ok for k in d.timings})
    stage_means = {s: sum(d.timings.get(s, 0.0) for d in ok) / len(ok) for s in stages} if ok else {}
    if system == "avpenet":
        model_s = br.triton_busy_s(triton, [p.name for p in _parts()])
    else:
        model_s = sum(d.timings.get("model", 0.0) for d in ok) / 1000.0
    return br.Cell(
        system=system,
        mix=mix,
        concurrency=concurrency,
        seconds=t1 - t0,
        latencies_ms=[d.latency_ms for d in ok],
        errors=len(done) - len(ok),
        windows=sum(d.windows for d in ok),
        media_seconds=media_seconds_per_clip * len(ok),
        stages_ms=stage_means,
        cpu_s=cpu,
        machine_busy_s=busy,
        cpu_seconds=end[3] - start[3],
        cores=meter.cores,
        model_s=model_s,
        triton=triton,
        error_kinds=error_kinds(d.detail for d in done if not d.ok),
        error_ms=error_latencies(d for d in done if not d.ok),
        stage_time=stagetime.delta(start[2], end[2]),
        admit_share=[stagetime.admit_share(start[2]), stagetime.admit_share(end[2])],
    )


def triton_counters(url: str | None):
    """Triton's counters, or None when its metrics endpoint does not answer (Triton crashed or is being
    restarted by the supervisor mid-cell): the cell is then reported with its failures and no Triton
    columns, instead of the whole bench aborting on the read."""
    try:
        return read_metrics(url)
    except (urllib.error.URLError, OSError) as exc:
        print(f"Triton metrics: {url} not read ({exc})", file=sys.stderr)
        return None


def triton_delta(start, end) -> dict:
    """Triton's counters over a cell; {} (not measured) when either read failed or a counter went back
    (Triton restarted inside the window, so its counters began again from zero)."""
    if start is None or end is None:
        return {}
    delta = metrics_delta(start, end)
    if any(v < 0 for row in delta.values() for v in row.values()):
        print("Triton metrics: counters went back (Triton restarted in the window)", file=sys.stderr)
        return {}
    return delta


def recorded_command(argv: list[str]) -> str:
    """The command a report names: how it was measured, without where it was written (`--markdown PATH`, a
    scratch path on the machine that ran it, means nothing to a reader re-running it)."""
    args = argv[2:] if argv[1:2] == ["bench"] else []
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--markdown":
            skip = True
        elif not arg.startswith("--markdown="):
            kept.append(arg)
    return shlex.join(["avpenet", "bench", *kept])


def error_kind(detail: str) -> str:
    """A failed request's kind: `HTTP 503 Overloaded`, or the client exception's class."""
    import re

    found = re.match(r'HTTP (\d+): b?[\'"]?.*?"error": ?"(\w+)"', detail)
    return f"HTTP {found.group(1)} {found.group(2)}" if found else detail.split(":", 1)[0][:40]


def error_kinds(details) -> dict[str, int]:
    """Failed requests counted by kind."""
    from collections import Counter

    return dict(Counter(error_kind(d) for d in details))


def error_latencies(failed: Iterable[Done]) -> dict[str, list[float]]:
    """How long each failed request took to be answered, by kind (ms): a refusal answered at admission
    comes back at once, a clip cut at its deadline after it; the count alone does not tell them apart."""
    out: dict[str, list[float]] = {}
    for d in failed:
        out.setdefault(error_kind(d.detail), []).append(round(d.latency_ms, 1))
    return out


def _parts():
    from avpenet import contract

    return contract.PARTS


# --- the three systems --------------------------------------------------------------------------------------
def deploy_peers(stack, track_every: int = 1) -> None:
    """Add the naive and ONNX Runtime apps to the stack's Serve (same proxy), the gateway app unchanged;
    they track the frames the gateway's `limits.track_every` says."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from loadtests import baseline, ort_peer

    config = stack.serve_config()
    config["applications"] += [
        baseline.app_config(stack.repo, track_every),
        ort_peer.app_config(stack.repo, track_every),
    ]
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    deadline = time.monotonic() + 180
    pending = {baseline.APP_NAME, ort_peer.APP_NAME}
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            app = serve.status().applications.get(name)
            if app and app.status == "RUNNING":
                pending.discard(name)
            elif app and app.status == "DEPLOY_FAILED":
                raise RuntimeError(f"{name} app deploy failed: {app.message}")
        time.sleep(0.5)
    if pending:
        raise RuntimeError(f"{', '.join(sorted(pending))} not running after 180 s")


def urls(http_url: str) -> dict[str, str]:
    from loadtests import baseline, ort_peer
    from preprocess_service.openapi import SCORE_ROUTE

    return {
        "naive": http_url + baseline.ROUTE_PREFIX + baseline.SCORE_ROUTE,
        "ort": http_url + ort_peer.ROUTE_PREFIX + ort_peer.SCORE_ROUTE,
        "avpenet": http_url + SCORE_ROUTE,
    }


def parity(targets: dict[str, str], parts) -> float:
    """The largest |score(x) - score(naive)| on one clip (also the first, warming requests of each system)."""

    async def both() -> list[float]:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
            scores = []
            for system in br.SYSTEMS:
                for _ in range(3):  # warm both: first calls pay lazy initialisation
                    done = await post(session, targets[system], parts)
                if not done.ok:
                    raise RuntimeError(f"{system} failed to score the benchmark clip: {done.detail}")
                async with session.post(targets[system], data=_form(parts)) as response:
                    scores.append(float((await response.json())["score"]))
            return scores

    naive, *others = asyncio.run(both())
    return max(abs(x - naive) for x in others)


def _form(parts):
    import aiohttp

    form = aiohttp.FormData()
    for f, name, data, ctype in parts:
        form.add_field(f, data, filename=name, content_type=ctype)
    form.add_field("age_group", "neonate")
    return form


def onnx_matches(model, repo: Path, tol: float = PARITY_TOL) -> bool:
    """Do the newest ONNX parts in `repo`, chained as the ensemble chains them, give `model`'s scores?

    Checked before anything starts: the naive app runs the PyTorch code of this checkout, so a repository
    exported from older model code would make the two systems run different networks.
    """
    import numpy as np
    import torch

    from avpenet import contract
    from ensemble.ort_chain import OrtChain
    from loadtests.kernels import _example_inputs

    inputs = _example_inputs(2)
    try:  # each part's fp32 graph of its newest version, chained as the ensemble chains them
        chain = OrtChain(repo, graphs={spec.name: "model.onnx" for spec in contract.PARTS})
        values = chain.all_tensors({k: v.numpy() for k, v in inputs.items()})
    except Exception as exc:  # a missing or incompatible graph is a mismatch, with its reason shown
        print(f"model repository {repo}: {exc}", file=sys.stderr)
        return False
    with torch.inference_mode():
        expected = model(**inputs)[contract.SCORE.name].numpy()
    got = values[contract.SCORE.name]
    return got.shape == expected.shape and float(np.max(np.abs(got - expected))) <= tol


def repository_for_bench(work: Path, repo: Path | None):
    """(repository to serve, the PyTorch model both systems run): the given or committed repository when it
    matches this checkout's model code, else a fresh `avpenet export` of it into `work`."""
    from ensemble import DEFAULT_REPOSITORY
    from ensemble.export import export_repository, load_source
    from loadtests.baseline import served_model

    repo = Path(repo or DEFAULT_REPOSITORY)
    try:
        model = served_model(repo)
        if onnx_matches(model, repo):
            return repo, model
    except Exception as exc:  # manifests from another model version: rebuild below
        print(f"model repository {repo}: {exc}", file=sys.stderr)
    print(
        f"{repo} does not match this checkout's model code (not re-exported yet?): benchmarking a fresh "
        "export of it instead",
        file=sys.stderr,
        flush=True,
    )
    fresh = work / "model_repository"
    model, source = load_source()
    with warnings.catch_warnings():  # the tracer's shape warnings; export's own parity check proves the graph
        warnings.simplefilter("ignore")
        export_repository(model, fresh, source)
    return fresh, served_model(fresh)


# --- CLI --------------------------------------------------------------------------------------------------
def mix_list(text: str) -> list[str]:
    """--mixes: a comma list of MIXES. The bench measures one request kind per mix (its payload, media seconds
    and efficiency are per kind), so clips.MIXES of several kinds (ward) are refused, naming the command that
    runs them, not met with a crash after the clips are built."""
    mixes = [m.strip() for m in text.split(",") if m.strip()]
    if mixes and not (unknown := [m for m in mixes if m not in MIXES]):
        return mixes
    named = f"no mix {', '.join(unknown)} in the bench" if mixes else "no mix given"
    several = [m for m in clips.MIXES if len(clips.MIXES[m]) > 1]
    raise argparse.ArgumentTypeError(
        f"{named}; it runs {', '.join(MIXES)} (one request kind each; "
        f"`avpenet loadtest --mix` runs {', '.join(several)})"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds per cell; writes no docs by default"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_ints,
        default=",".join(map(str, CONCURRENCIES)),
        help="comma list (default: %(default)s)",
    )
    parser.add_argument(
        "--mixes",
        type=mix_list,
        default=",".join(MIXES),
        help="comma list of %(default)s (one request kind each: `avpenet loadtest --mix` runs ward)",
    )
    parser.add_argument(
        "--measure-s", type=positive_number, default=None, help="measured seconds per cell (above 0)"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help=f"report path (default: {MARKDOWN.relative_to(PROJECT_ROOT)} unless --quick)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="re-render a saved run (docs/img/bench.json), measure nothing",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="Markdown file whose paragraphs are added to the report's notes (figures measured outside it)",
    )
    parser.add_argument(
        "--max-replicas", type=positive_int, default=1, help="Serve replica cap of the gateway app"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="measure every cell this many times (systems interleaved each round); the tables report the "
        "round with the median (b)/(a) per mix, and a Rounds table shows them all",
    )
    parser.add_argument(
        "--repo", type=Path, default=None, help="model repository to serve (default: the committed one)"
    )
    parser.add_argument(
        "--model-config-name",
        default=None,
        help="Triton config variant, e.g. gpu (configs/gpu.pbtxt: needs a tritonserver with the onnxruntime "
        "backend and a GPU, as in the NGC container)",
    )
    parser.add_argument(
        "--track-every",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="limits.track_every of every system: the landmarker on every N-th video frame (default: "
        "serve_config.yaml's)",
    )
    parser.add_argument(
        "--parity-tol",
        type=positive_number,  # NaN would pass every score (no difference is above it)
        default=PARITY_TOL,
        help="largest |score - naive score| accepted (default: %(default)s; raise it for int8 parts)",
    )


def run(args: argparse.Namespace) -> int:
    from loadtests import kernels
    from preprocess_service.stack import LocalStack

    if args.from_json is not None:
        return _rerender(args)
    timing = QUICK if args.quick else DEFAULT
    if args.measure_s is not None:
        timing = replace(timing, measure_s=args.measure_s)
    concurrencies = args.concurrency  # a list: argparse applies positive_ints to the default too
    mixes = args.mixes  # a list: argparse applies mix_list to the default too
    markdown_path = None if args.no_write else (args.markdown or (None if args.quick else MARKDOWN))
    command = recorded_command(sys.argv)

    work = Path(tempfile.mkdtemp(prefix="avpenet-bench-"))
    print("building the benchmark clips ...", file=sys.stderr, flush=True)
    kinds = {m: next(iter(clips.MIXES[m])) for m in mixes}
    clips.build(work / "clips", sorted(set(kinds.values())))
    payloads = {m: payload(work / "clips", m) for m in mixes}

    repo, model = repository_for_bench(work, args.repo)
    print("counting FLOPs and measuring kernel rates ...", file=sys.stderr, flush=True)
    flops = kernels.flops_per_window(model)
    rates = kernels.measure(model, seconds=1.0 if args.quick else 2.0)
    del model
    meter = CpuMeter()
    print("starting the local stack (Triton + Ray Serve) and the peer apps ...", file=sys.stderr, flush=True)
    limits = stack_limits(args.track_every)
    signal.signal(signal.SIGTERM, _interrupt)  # stop Triton and Ray on `kill` too, not only on Ctrl-C
    triton = {"model_config_name": args.model_config_name} if args.model_config_name else None
    with LocalStack(
        repo=repo,
        grpc_port=None,
        max_replicas=args.max_replicas,
        args={"limits": limits},
        deployments=stack_deployments(limits),
        triton_kwargs=triton,
    ) as stack:
        deploy_peers(stack, limits.get("track_every", 1))
        targets = urls(stack.http_url)
        diffs = {m: parity(targets, payloads[m]) for m in mixes}
        print("same clip, |score(b) - score(a)|: " + ", ".join(f"{m} {d:.1e}" for m, d in diffs.items()))
        if max(diffs.values()) > args.parity_tol:
            print(
                f"avpenet bench: the systems disagree by > {args.parity_tol}: not comparable", file=sys.stderr
            )
            return 1
        grid = [(mix, c) for mix in mixes for c in concurrencies]
        rounds = []
        for r in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {r} of {args.rounds}", file=sys.stderr, flush=True)
            rounds.append([
                replace(_measure_best(args, system, mix, c, targets, payloads, kinds, timing, meter, stack),
                        round=r)
                for mix, c in grid
                for system in br.SYSTEMS
            ])  # fmt: skip
        cells, other_rounds = br.median_round(rounds)
    report = br.Report(
        command=command,
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=host.machine(),
        cores=meter.cores,
        quick=args.quick,
        flops=flops,
        kernels=[vars(r) for r in rates],
        parity=diffs,
        cells=cells,
        notes=notes(cells) + file_notes(args.notes),
        repository=_repository_label(repo, work),
        other_rounds=other_rounds,
    )
    return _publish(report, work, markdown_path)


def _rerender(args: argparse.Namespace) -> int:
    """`--from-json`: the report of an earlier run re-rendered. Its notes are made again from its cells plus
    the `--notes` file as it is now, so re-rendering twice does not repeat the file's paragraphs."""
    try:
        report = br.report_from_dict(json.loads(args.from_json.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{args.from_json} is not a saved bench run ({type(exc).__name__}: {exc})") from None
    argv = shlex.split(report.command)
    if argv[:2] == ["avpenet", "bench"]:  # a run recorded before `recorded_command` dropped its `--markdown`
        report.command = recorded_command(argv)
    report.notes = notes(report.cells) + file_notes(args.notes)
    print_report(report)
    if not args.no_write:
        write(report, args.markdown or MARKDOWN)
        print(f"wrote {args.markdown or MARKDOWN}")
    return 0


def _measure_best(args, system, mix, c, targets, payloads, kinds, timing, meter, stack) -> br.Cell:
    """One cell, measured again (up to RETRIES_WHEN_BUSY times) while other work held the cores; the run
    that others disturbed least is kept."""
    cell = None
    for attempt in range(1, 1 + (1 if args.quick else RETRIES_WHEN_BUSY + 1)):
        again = measure_cell(
            system=system,
            mix=mix,
            url=targets[system],
            parts=payloads[mix],
            concurrency=c,
            timing=timing,
            meter=meter,
            triton_metrics_url=stack.triton.metrics_url,
            media_seconds_per_clip=clips.KINDS[kinds[mix]].seconds,
            stage_urls=(stack.triton.metrics_url, stack.http_url + "/metrics"),
        )
        again.attempts = attempt
        cell = again if cell is None or again.other_load < cell.other_load else cell
        if cell.other_load <= RETRY_OTHER_LOAD:
            break
        print(f"  (others kept {again.other_load:.0%} of the cores busy)", file=sys.stderr)
    print(
        f"  {mix:<6} c={c:<3} {system:<8} {cell.throughput:6.1f} clips/s"
        f"  p50 {cell.p50_ms:7.0f} ms  p99 {cell.p99_ms:7.0f} ms  errors {cell.errors}"
        f"  other load {cell.other_load:.0%}",
        file=sys.stderr,
        flush=True,
    )
    return cell


def _repository_label(repo: Path, work: Path) -> str:
    from ensemble import DEFAULT_REPOSITORY

    if repo == DEFAULT_REPOSITORY:
        return "model_repository/ (committed)"
    if repo.is_relative_to(work):
        return (
            "a fresh `avpenet export` of this checkout's model (model_repository/ was older than "
            "avpenet/model.py)"
        )
    return str(repo)


def _publish(report: br.Report, work: Path, markdown_path: str | Path | None) -> int:
    """Print the report, keep the raw JSON, write the markdown; non-zero when a cell completed nothing."""
    print_report(report)
    raw = work / "bench.json"
    raw.write_text(to_json(report))
    print(f"raw results: {raw}")
    if markdown_path is not None:
        write(report, Path(markdown_path))
        print(f"wrote {markdown_path}")
    return 0 if all(c.requests for c in report.cells) else 1


def print_report(report: br.Report) -> None:
    print(br.text_table(report))
    print()
    for title, rows in (
        ("mean ms per stage", br.stage_rows(report)),
        (
            "where AVPENet Serve's time goes, mean ms per request (gateway histogram, Triton metrics)",
            stagetime.path_rows(report.cells),
        ),
        (
            "Triton per model: queue and compute ms per request, batches, busy share of the window",
            stagetime.model_rows(report.cells),
        ),
        ("CPU ms per clip", br.cpu_rows(report)),
        (
            "rounds (the tables above report the median (b)/(a))",
            br.round_rows(report) if report.other_rounds else [],
        ),
    ):
        if len(rows) <= 1:  # nothing measured (a run saved before these were recorded), or one round
            continue
        print(f"{title}:")
        print(br.text_table_of(rows))
        print()
    for t in br.targets(report):
        verdict = {True: "met", False: "MISSED"}[bool(t.met)]
        print(f"{verdict:>6}  {t.name}: {t.measured} (target {t.wanted}){'' if t.met else ' - ' + t.limit}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stack_limits(track_every: int | None = None) -> dict:
    """The limits the bench deploys: serve_config.yaml's, only the admission bound raised (BENCH_LIMITS), and
    `track_every` when given (`--track-every`)."""
    from preprocess_service.stack import load_config

    (app,) = load_config()["applications"]
    chosen = {} if track_every is None else {"track_every": track_every}
    return {**app.get("args", {}).get("limits", {}), **BENCH_LIMITS, **chosen}


def stack_deployments(limits: dict) -> dict:
    """The Gateway's Ray cap raised with the admission bound, as `serve_config.check_capacity` asks."""
    from preprocess_service.serve_config import gateway_deployments

    return gateway_deployments({"limits": limits})


def file_notes(path: Path | None) -> list[str]:
    """The paragraphs of a `--notes` Markdown file (figures measured outside the run), none without one."""
    if path is None:
        return []
    return [n.strip() for n in path.read_text().split("\n\n") if n.strip()]


NO_KINDS = "kinds not recorded"


def _error_kind_note(cell: br.Cell, kind: str, n: int) -> str:
    """`HTTP 503 X x7, answered after 15.2 s-15.9 s`: when the failures came back tells a refusal at admission
    from work cut off at a deadline."""
    ms = sorted(cell.error_ms.get(kind, []))
    if not ms:
        return f"{kind} x{n}"
    span = _duration(ms[0]) if len(ms) == 1 else f"{_duration(ms[0])}-{_duration(ms[-1])}"
    return f"{kind} x{n}, answered after {span}"


def _duration(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def share_text(value: float | None) -> str:
    """An admission share as the reports print it."""
    return "not read" if value is None else f"{value:.2f}"


def notes(cells: list[br.Cell]) -> list[str]:
    """What a reader must know to trust this run's figures (busy machine, errors, thin samples)."""
    out = []
    busy = [c for c in cells if c.other_load > 0.15]
    if busy:
        worst = max(busy, key=lambda c: c.other_load)
        out.append(
            f"The machine was busy with other work during {len(busy)} of {len(cells)} cells (worst: "
            f"{worst.other_load:.0%} of the cores in {worst.mix} c={worst.concurrency} {worst.system}); "
            "throughputs and latencies there are worse than on a quiet box; CPU-seconds per clip much "
            "less so."
        )
    again = [c for c in cells if c.attempts > 1]
    if again:
        out.append(
            f"{len(again)} cells were measured again because others held > {RETRY_OTHER_LOAD:.0%} of the "
            "cores; the less disturbed measurement is reported."
        )
    failed = [c for c in cells if c.errors]
    if failed:
        out.append(
            "Failed requests in: "
            + ", ".join(
                f"{c.mix} c={c.concurrency} {c.system} ({c.errors}: "
                + (", ".join(_error_kind_note(c, k, n) for k, n in c.error_kinds.items()) or NO_KINDS)
                + ")"
                for c in failed
            )
        )
    backed_off = [c for c in cells if any(v is not None and v < ADMIT_SHARE_DEFAULT for v in c.admit_share)]
    if backed_off:
        out.append(
            "The gateway's video admission share (its headroom against the extraction deadline) was below "
            f"its default {ADMIT_SHARE_DEFAULT} at a window's start or end in: "
            + ", ".join(
                f"{c.mix} c={c.concurrency} round {c.round} ({share_text(c.admit_share[0])} -> "
                f"{share_text(c.admit_share[-1])})"
                for c in backed_off
            )
            + "; it backs off on each clip cut at its deadline and recovers with each finished clip."
        )
    thin = [c for c in cells if 0 < c.requests < 100]
    if thin:
        out.append(
            f"{len(thin)} cells completed fewer than 100 requests: their p99 is close to their maximum."
        )
    return out


def write(report: br.Report, path: Path) -> None:
    plot_path = path.parent / "img" / "bench.png"
    br.plot(report, plot_path)
    plot_path.with_suffix(".json").write_text(to_json(report))
    rel = os.path.relpath(plot_path, path.parent)
    path.write_text(br.markdown(report, rel))


def to_json(report: br.Report) -> str:
    data = {k: v for k, v in vars(report).items() if k not in ("cells", "other_rounds")}
    data["cells"] = [c.to_dict() for c in report.cells]
    data["other_rounds"] = [c.to_dict() for c in report.other_rounds]
    return json.dumps(data, indent=1, default=_json_default) + "\n"


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
