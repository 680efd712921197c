"""The bench's per-stage breakdown: Triton's and the gateway's counters parsed, diffed and turned into
mean ms per request, batches and busy shares (fixed metric texts; one loopback scrape)."""

from __future__ import annotations

import http.server
import json
import math
import threading

import pytest

from loadtests import bench, stagetime
from loadtests import benchreport as br
from preprocess_service import telemetry

# Triton's exposition before and after a 10 s window: audio_encoder ran 10 batches of 4 requests (40 ms
# each, so Triton charged 40 requests x 40 ms), each request queued 5 ms on average; the ensemble took
# 100 ms per request; one fusion request failed. Versions and the failure's reason label are summed.
TRITON_TEMPLATE = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="audio_encoder",version="2"}} 100
nv_inference_request_success{{model="audio_encoder",version="3"}} {encoder_v3}
nv_inference_request_success{{model="avpenet",version="1"}} {ensemble}
nv_inference_request_success{{model="fusion",version="3"}} 100
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{{model="fusion",reason="REJECTED",version="3"}} {fusion_failed}
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{{model="audio_encoder",version="2"}} {encoder_exec}
nv_inference_exec_count{{model="avpenet",version="1"}} {ensemble}
nv_inference_exec_count{{model="fusion",version="3"}} 100
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{{model="audio_encoder",version="2"}} {encoder_queue}
nv_inference_queue_duration_us{{model="fusion",version="3"}} 0
# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{{model="audio_encoder",version="2"}} {encoder_infer}
nv_inference_compute_infer_duration_us{{model="fusion",version="3"}} 1000000
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{{model="avpenet",version="1"}} {ensemble_us}
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{{gpu_uuid="x"}} 0.5
"""
TRITON_BEFORE = TRITON_TEMPLATE.format(
    encoder_v3=0, ensemble=100, fusion_failed=0, encoder_exec=25, encoder_queue=1000, encoder_infer=4_000_000,
    ensemble_us=10_000_000,
)  # fmt: skip
TRITON_AFTER = TRITON_TEMPLATE.format(
    encoder_v3=40, ensemble=140, fusion_failed=1, encoder_exec=35, encoder_queue=201_000,
    encoder_infer=5_600_000, ensemble_us=14_000_000,
)  # fmt: skip


def gateway_text(requests: int) -> str:
    """The real gateway histogram after `requests` answers of 2 ms decode, 120 ms triton, 150 ms total,
    spread over both protocols and every request kind (the histogram's `kind` label)."""
    metrics = telemetry.Metrics()
    for i in range(requests):
        protocol = "grpc" if i % 4 == 0 else "http"
        kind = telemetry.KINDS[i % len(telemetry.KINDS)]
        metrics.observe_stages({"decode": 2.0, "triton": 120.0, "total": 150.0}, protocol, kind)
    return metrics.exposition().decode()


def window() -> stagetime.Metrics:
    before = {**stagetime.parse(TRITON_BEFORE), **stagetime.parse(gateway_text(10))}
    after = {**stagetime.parse(TRITON_AFTER), **stagetime.parse(gateway_text(50))}
    return stagetime.delta(before, after)


def test_triton_counters_become_per_request_queue_compute_and_busy_share():
    delta = window()
    (encoder,) = stagetime.model_times(delta, 10.0, ["audio_encoder"])
    assert encoder.requests == 40 and encoder.executions == 10 and encoder.requests_per_batch == 4
    assert encoder.queue_ms == pytest.approx(5.0)
    assert encoder.compute_ms == pytest.approx(40.0)  # what each request waited while its batch ran
    assert encoder.busy_share == pytest.approx(0.04)  # 10 batches x 40 ms in 10 s
    (fusion,) = stagetime.model_times(delta, 10.0, ["fusion"])
    assert fusion.failures == 1 and fusion.requests == 0
    (ensemble,) = stagetime.model_times(delta, 10.0, [stagetime.ENSEMBLE])
    assert ensemble.in_triton_ms == pytest.approx(100.0) and math.isnan(ensemble.busy_share)
    assert "nv_gpu_utilization" not in json.dumps(delta)


def test_gateway_histogram_becomes_mean_ms_per_stage_over_protocols_and_kinds():
    means = stagetime.gateway_means_ms(window())
    assert means == pytest.approx({"decode": 2.0, "triton": 120.0, "total": 150.0})  # features: none


def _cell(**kw) -> br.Cell:
    base = dict(
        system="avpenet", mix="long", concurrency=32, seconds=10.0, latencies_ms=[200.0] * 40, errors=0,
        windows=40 * 58, media_seconds=2400.0, stages_ms={}, cpu_s={"triton": 1.0}, machine_busy_s=2.0,
        cores=2, stage_time=window(),
    )  # fmt: skip
    base.update(kw)
    return br.Cell(**base)


def test_rows_say_where_the_time_went_and_render_in_the_report():
    cell = _cell()
    header, row = stagetime.path_rows([cell, _cell(system="naive", stage_time={})])
    values = dict(zip(header, row, strict=True))
    assert values["client"] == "200" and values["outside gateway"] == "50"
    assert values["gateway total"] == "150"
    assert values["triton call"] == "120" and values["in Triton (avpenet)"] == "100"
    assert values["gRPC + gateway side"] == "20" and values["features"] == "-"
    assert values["video queue"] == "-"
    header, *rows = stagetime.model_rows([cell])
    encoder = dict(zip(header, next(r for r in rows if r[2] == "audio_encoder"), strict=True))
    assert encoder["queue ms"] == "5.0" and encoder["compute ms"] == "40.0"
    assert encoder["busy % of window"] == "4"
    report = br.Report(
        command="avpenet bench", when="now", machine="box", cores=2, quick=False, flops={"total": 1e9},
        kernels=[], parity={}, cells=[cell],
    )  # fmt: skip
    md = br.markdown(report)
    assert "## Where a request's time goes" in md and "| long | 32 | audio_encoder | 40 | 4.00 | 5.0 |" in md
    again = br.report_from_dict(json.loads(bench.to_json(report)))
    assert br.markdown(again) == md


def test_busy_time_divides_by_requests_per_batch_not_windows():
    # a 60-s clip: each execution is ONE request of 58 windows, 500 ms each, 10 of them
    deltas = {
        "fusion": {
            "nv_inference_count": 580.0,
            "nv_inference_request_success": 10.0,
            "nv_inference_exec_count": 10.0,
            "nv_inference_compute_infer_duration_us": 5_000_000.0,
        }
    }
    assert br.triton_busy_s(deltas, ["fusion"]) == pytest.approx(5.0)


def test_scrape_merges_endpoints_and_skips_an_unreachable_one(refused_port):
    texts = {"/triton": TRITON_AFTER, "/gateway": gateway_text(3)}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = texts[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        dead = f"http://127.0.0.1:{refused_port}/metrics"
        got = stagetime.scrape([base + "/triton", None, dead, base + "/gateway"])
    finally:
        server.shutdown()
        server.server_close()
    assert got["audio_encoder"]["nv_inference_exec_count"] == 35
    assert got["gateway:total"]["count"] == 3


def test_the_video_admission_share_is_read_as_a_level_not_diffed():
    def exposition(share: float, requests: int) -> stagetime.Metrics:
        metrics = telemetry.Metrics()
        metrics.video_admit_share.set(share)
        for _ in range(requests):
            metrics.observe_stages({"total": 150.0}, "http", "video")
        return stagetime.parse(metrics.exposition().decode())

    before, after = exposition(0.8, 10), exposition(0.45, 50)
    assert stagetime.admit_share(before) == pytest.approx(0.8)
    assert stagetime.admit_share(after) == pytest.approx(0.45)
    assert stagetime.admit_share(stagetime.parse(TRITON_AFTER)) is None  # no gateway in that scrape
    delta = stagetime.delta(before, after)
    assert stagetime.ADMIT_SHARE not in delta  # a level's difference means nothing
    assert delta["gateway:total"]["count"] == 40
