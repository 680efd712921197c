"""Where a request's time goes inside AVPENet Serve, measured over a bench cell's window (not guessed).

Two sources, each read just before and just after the measured phase and diffed:
- Triton's metrics endpoint, per model (the four parts and the `avpenet` ensemble): successful and failed
  requests, executions (batches), queue time, compute time (input + infer + output) and Triton's own time per
  request. Triton charges a batch's compute time to EVERY request in the batch (each request reports the
  batch's timestamps), so the per-request compute time is what a request waited while its batch ran, and an
  instance's busy time is that total divided by the requests per execution.
- the gateway's stage histogram (`avpenet_gateway_stage_seconds`: queue (a video's wait for admission),
  decode, features, triton, total; successful requests only), read from the gateway replica's `/metrics`.
  With more than one gateway replica a scrape reaches one of them, so the bench runs one (`--max-replicas
  1`, its default).

The client's latency minus the gateway's `total` is what lies outside the gateway (proxy, Ray's handle hop,
request admission; a video's wait for its turn at the FeatureExtractor is inside `total`, as `queue`); the
gateway's `triton` minus the ensemble's time in Triton is the gRPC call itself.
"""

from __future__ import annotations

import math
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from avpenet import contract
from ensemble.client import metrics_delta
from preprocess_service import telemetry

Metrics = dict[str, dict[str, float]]  # series -> metric -> value

TRITON_STAGE_METRICS = (
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)  # fmt: skip
COMPUTE_METRICS = TRITON_STAGE_METRICS[-3:]
GATEWAY_HISTOGRAM = telemetry.STAGE_SECONDS
GATEWAY_PREFIX = "gateway:"  # series of the gateway's stages: "gateway:<stage>" -> {"sum_s", "count"}
ADMIT_SHARE_GAUGE = telemetry.VIDEO_ADMIT_SHARE
ADMIT_SHARE = GATEWAY_PREFIX + "admit_share"  # its series: {"value"}, a level, not a count (see `delta`)
SCRAPE_TIMEOUT_S = 5.0
ENSEMBLE = contract.ENSEMBLE.name
MODELS = (*(p.name for p in contract.PARTS), ENSEMBLE)  # the rows of the per-model table, in this order


def parse(text: str) -> Metrics:
    """Triton's counters per model (summed over versions and labels), the gateway's stage histograms per
    stage (`GATEWAY_PREFIX + stage`: seconds summed and requests counted over protocols) and its video
    admission share (`ADMIT_SHARE`) in one exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Metrics = {}

    def add(series: str, metric: str, value: float) -> None:
        row = out.setdefault(series, {})
        row[metric] = row.get(metric, 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")  # the parser names counter samples *_total
            if name in TRITON_STAGE_METRICS and "model" in sample.labels:
                add(sample.labels["model"], name, float(sample.value))
            elif family.name == GATEWAY_HISTOGRAM and "stage" in sample.labels:
                kind = {GATEWAY_HISTOGRAM + "_sum": "sum_s", GATEWAY_HISTOGRAM + "_count": "count"}
                if sample.name in kind:
                    add(GATEWAY_PREFIX + sample.labels["stage"], kind[sample.name], float(sample.value))
            elif family.name == ADMIT_SHARE_GAUGE:
                add(ADMIT_SHARE, "value", float(sample.value))
    return out


def scrape(urls: Iterable[str | None]) -> Metrics:
    """`parse` of every URL's exposition, merged; an unreachable endpoint is reported and contributes nothing
    (its stages then show as not measured rather than failing the bench)."""
    merged: Metrics = {}
    for url in urls:
        if not url:
            continue
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            print(f"stage metrics: {url} not read ({exc})", file=sys.stderr)
            continue
        for series, row in parse(text).items():
            merged.setdefault(series, {}).update(row)
    return merged


def delta(start: Metrics, end: Metrics) -> Metrics:
    """end - start per series and metric (a series first seen at `end` counts from zero); levels (the video
    admission's share) are not counts and are left out: `admit_share` reads them."""
    return metrics_delta(*({k: v for k, v in m.items() if k != ADMIT_SHARE} for m in (start, end)))


def admit_share(metrics: Metrics) -> float | None:
    """The gateway's video admission share (preprocess_service/video_admission.py) in a scrape, or None."""
    return metrics.get(ADMIT_SHARE, {}).get("value")


@dataclass(frozen=True)
class ModelTime:
    """One Triton model over a measured window; times are means per successful request."""

    model: str
    requests: float
    failures: float
    executions: float
    queue_ms: float
    compute_ms: float  # the request's batch: input + infer + output
    in_triton_ms: float  # Triton's request duration for this model (queue + compute + its own overhead)
    busy_share: float  # the model's busy time / the window: 1.0 = one instance computing all the time
    # (the ensemble: NaN; its queue is ~0 and its compute is its parts' compute summed)

    @property
    def requests_per_batch(self) -> float:
        return self.requests / self.executions if self.executions else math.nan


def model_times(stage_delta: Metrics, seconds: float, models: Sequence[str] = MODELS) -> list[ModelTime]:
    """ModelTime of each of `models` present in a `delta` of Triton's metrics over `seconds`."""
    out = []
    for model in models:
        d = stage_delta.get(model)
        if d is None:
            continue
        requests = d.get("nv_inference_request_success", 0.0)
        executions = d.get("nv_inference_exec_count", 0.0)
        compute_us = sum(d.get(m, 0.0) for m in COMPUTE_METRICS)

        def per_request(us: float, n: float = requests) -> float:
            return us / n / 1000.0 if n else math.nan

        busy_s = compute_us * executions / requests / 1e6 if requests else 0.0
        if model == ENSEMBLE:  # its "compute" is its parts' summed: no instance of its own to keep busy
            busy_s = math.nan
        out.append(
            ModelTime(
                model=model,
                requests=requests,
                failures=d.get("nv_inference_request_failure", 0.0),
                executions=executions,
                queue_ms=per_request(d.get("nv_inference_queue_duration_us", 0.0)),
                compute_ms=per_request(compute_us),
                in_triton_ms=per_request(d.get("nv_inference_request_duration_us", 0.0)),
                busy_share=busy_s / seconds if seconds > 0 else math.nan,
            )
        )
    return out


def gateway_means_ms(stage_delta: Metrics) -> dict[str, float]:
    """{stage: mean ms per successful request} from a `delta` of the gateway's stage histogram."""
    out = {}
    for series, d in stage_delta.items():
        if series.startswith(GATEWAY_PREFIX) and d.get("count", 0.0) > 0:
            out[series.removeprefix(GATEWAY_PREFIX)] = 1000.0 * d.get("sum_s", 0.0) / d["count"]
    return out


# --- rendering (cells: benchreport.Cell, with system, mix, concurrency, seconds, latencies_ms, stage_time) --
def _f(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def path_rows(cells: Iterable) -> list[list[str]]:
    """Per AVPENet Serve cell: the client's mean latency and where it went (mean ms per request)."""
    header = ["mix", "c", "client", "outside gateway", "gateway total", "video queue", "decode", "features",
              "triton call",
              f"in Triton ({ENSEMBLE})", "gRPC + gateway side"]  # fmt: skip
    rows = [header]
    for c in cells:
        if c.system != "avpenet" or not c.stage_time:
            continue
        client = sum(c.latencies_ms) / len(c.latencies_ms) if c.latencies_ms else math.nan
        g = gateway_means_ms(c.stage_time)
        total, call = g.get("total", math.nan), g.get("triton", math.nan)
        ens = next(iter(model_times(c.stage_time, c.seconds, [ENSEMBLE])), None)
        in_triton = ens.in_triton_ms if ens else math.nan
        rows.append(
            [
                c.mix,
                str(c.concurrency),
                _f(client, ".0f"),
                _f(client - total, ".0f"),
                _f(total, ".0f"),
                _f(g.get("queue", math.nan), ".0f"),
                _f(g.get("decode", math.nan), ".1f"),
                _f(g.get("features", math.nan), ".1f"),
                _f(call, ".0f"),
                _f(in_triton, ".0f"),
                _f(call - in_triton, ".0f"),
            ]
        )
    return rows


def model_rows(cells: Iterable) -> list[list[str]]:
    """Per AVPENet Serve cell and Triton model: queue and compute ms per request, batches, busy share."""
    header = ["mix", "c", "model", "requests", "requests/batch", "queue ms", "compute ms", "in Triton ms",
              "busy % of window", "failed"]  # fmt: skip
    rows = [header]
    for c in cells:
        if c.system != "avpenet" or not c.stage_time:
            continue
        for m in model_times(c.stage_time, c.seconds):
            rows.append(
                [
                    c.mix,
                    str(c.concurrency),
                    m.model,
                    f"{m.requests:.0f}",
                    _f(m.requests_per_batch, ".2f"),
                    _f(m.queue_ms, ".1f"),
                    _f(m.compute_ms, ".1f"),
                    _f(m.in_triton_ms, ".1f"),
                    _f(100.0 * m.busy_share, ".0f"),
                    f"{m.failures:.0f}",
                ]
            )
    return rows


def markdown_lines(cells: Sequence, table) -> list[str]:
    """The report's section; `table(header, rows)` renders a markdown table (benchreport.markdown_table)."""
    path, per_model = path_rows(cells), model_rows(cells)
    if len(path) == 1 and len(per_model) == 1:
        return []
    return [
        "## Where a request's time goes (AVPENet Serve, measured)",
        "",
        "Mean ms per request over each cell's measured window, diffed from counters read before and after "
        "it: the gateway's stage histogram (`avpenet_gateway_stage_seconds`, successful requests) and "
        "Triton's metrics per model (`nv_inference_queue_duration_us`, `nv_inference_compute_*_duration_us`, "
        "`nv_inference_request_duration_us` over `nv_inference_request_success`, batches from "
        "`nv_inference_exec_count`). `outside gateway` = client latency - gateway `total` (proxy, Ray's "
        "handle hop, admission); `gRPC + gateway side` = the gateway's `triton` call - the ensemble's time "
        "in Triton. Triton charges a batch's compute to every request in it: `compute ms` is what a request "
        "waited while its batch ran, and `busy %` (compute x batches / requests over the window) is how "
        "much of the window the part's one instance computed (loadtests/stagetime.py).",
        "",
        table(path[0], path[1:]),
        "",
        table(per_model[0], per_model[1:]),
        "",
    ]
