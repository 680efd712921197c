"""The benchmark's pure logic: statistics, ratios, batch/efficiency math, CPU accounting, report rendering."""

from __future__ import annotations

import json
import math

import pytest
from support.bench_reports import make_cell, make_report

from ensemble import client
from loadtests import bench
from loadtests import benchreport as br

TRITON_TEXT = """# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="audio_encoder",version="1"} 96
nv_inference_count{model="audio_encoder",version="2"} 4
nv_inference_count{model="fusion",version="2"} 40
# HELP nv_inference_exec_count Number of model executions performed
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="audio_encoder",version="1"} 10
nv_inference_exec_count{model="fusion",version="2"} 20
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.5
"""


class TestStatistics:
    def test_percentiles_interpolate(self):
        values = [float(v) for v in range(1, 101)]
        assert br.percentile(values, 50) == pytest.approx(50.5)
        assert br.percentile(values, 99) == pytest.approx(99.01)
        assert math.isnan(br.percentile([], 50))

    def test_ratio_and_batch_guard_division_by_zero(self):
        assert br.ratio(30.0, 10.0) == pytest.approx(3.0)
        assert math.isnan(br.ratio(1.0, 0.0))
        assert br.average_batch(96, 12) == pytest.approx(8.0)
        assert math.isnan(br.average_batch(5, 0))

    def test_efficiency_is_flops_rate_over_kernel_rate(self):
        # 0.5 GFLOP/window x 100 windows/s = 50 GFLOP/s of 200 GFLOP/s = 25 %
        assert br.efficiency(0.5e9, 100.0, 200.0) == pytest.approx(0.25)

    def test_triton_busy_time_counts_each_batch_once(self):
        # 8 executions of batch 4 lasting 10 ms each: Triton reports 32 requests x 10 ms = 320 ms
        deltas = {
            "audio_encoder": {
                "nv_inference_count": 32.0,
                "nv_inference_exec_count": 8.0,
                "nv_inference_compute_infer_duration_us": 320_000.0,
            },
            "fusion": {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0},
        }
        assert br.triton_busy_s(deltas, ["audio_encoder", "fusion", "absent"]) == pytest.approx(0.08)


class TestCell:
    def test_derived_figures(self):
        cell = make_cell(n=100, seconds=10.0)
        assert cell.throughput == pytest.approx(10.0)
        assert cell.p50_ms == pytest.approx(50.5)
        assert cell.server_cpu_s == pytest.approx(6.5)  # the load generator is not the server
        assert cell.cpu_s_per_clip == pytest.approx(0.065)
        assert cell.loadgen_cpu_s_per_clip == pytest.approx(0.01)
        assert cell.avg_batch("audio_encoder") == pytest.approx(10.0)
        assert math.isnan(cell.avg_batch("fusion"))
        # 1.5 CPU-s of the FeatureExtractor over 300 s of media
        assert cell.features_ms_per_media_s == pytest.approx(5.0)
        # 10 busy CPU-s on the machine, 7.5 of them ours, capacity 2 cores x 10 s
        assert cell.other_load == pytest.approx(0.125)

    def test_naive_feature_cpu_is_its_replica(self):
        cell = make_cell("naive", cpu_s={"naive": 3.0}, n=10)
        assert cell.features_ms_per_media_s == pytest.approx(100.0)

    def test_process_groups(self):
        assert br.classify_process("tritonserver", "/x/tritonserver --model-repository") == "triton"
        assert br.classify_process("triton_python_b", "/x/triton_python_backend_stub model.py") == "triton"
        assert (
            br.classify_process("ray::ServeRepli", "ray::ServeReplica:avpenet:FeatureExtractor") == "features"
        )
        assert br.classify_process("ray::ServeRepli", "ray::ServeReplica:avpenet:Gateway.handle") == "gateway"
        assert br.classify_process("ray::ServeRepli", "ray::ServeReplica:naive:NaiveScorer") == "naive"
        assert br.classify_process("ray::ProxyActor", "ray::ProxyActor") == "proxy"
        assert br.classify_process("raylet", "/x/raylet --raylet_socket_name") == "ray"
        assert set(br.GROUPS) >= {"loadgen", "ray", "triton"}


class TestMeasurementPlumbing:
    def test_triton_metrics_sum_versions_per_model(self):
        parsed = client.parse_metrics(TRITON_TEXT)
        assert parsed["audio_encoder"]["nv_inference_count"] == 100.0
        assert parsed["audio_encoder"]["nv_inference_exec_count"] == 10.0
        assert parsed["fusion"] == {"nv_inference_count": 40.0, "nv_inference_exec_count": 20.0}
        assert "nv_cpu_utilization" not in str(parsed)

    def test_counter_delta(self):
        start = {"fusion": {"nv_inference_count": 40.0}}
        end = {"fusion": {"nv_inference_count": 100.0}, "audio_encoder": {"nv_inference_count": 7.0}}
        assert client.metrics_delta(start, end) == {
            "fusion": {"nv_inference_count": 60.0},
            "audio_encoder": {"nv_inference_count": 7.0},
        }

    def test_cpu_delta_counts_new_processes_whole_and_groups(self):
        start = ({(1, 0.0): ("loadgen", 5.0), (2, 0.0): ("triton", 10.0)}, 100.0)
        end = ({(1, 0.0): ("loadgen", 6.0), (2, 0.0): ("triton", 13.0), (3, 9.0): ("triton", 0.5)}, 120.0)
        groups, busy = bench.CpuMeter.delta(start, end)
        assert groups["loadgen"] == pytest.approx(1.0)
        assert groups["triton"] == pytest.approx(3.5)
        assert groups["gateway"] == 0.0
        assert busy == pytest.approx(20.0)


class TestReport:
    def test_targets_met_and_missed(self):
        met = {t.name: t for t in br.targets(make_report(naive_rps=5.0, avpenet_rps=20.0))}
        ratio = next(t for n, t in met.items() if "throughput" in n)
        assert ratio.met and ratio.measured == "4.00x"
        missed = {t.name: t for t in br.targets(make_report(naive_rps=16.0, avpenet_rps=20.0))}
        ratio = next(t for n, t in missed.items() if "throughput" in n)
        assert ratio.met is False and ratio.measured == "1.25x" and ratio.limit
        batch = next(t for n, t in missed.items() if "batch" in n)
        assert batch.met and batch.measured == "10.0"
        # 0.44 GFLOP x 20 windows/s = 8.8 GFLOP/s of the 80 GFLOP/s limit (the larger kernel) = 11 %
        eff = next(t for n, t in missed.items() if "efficiency" in n)
        assert eff.met is False and eff.measured.startswith("11%")

    def test_kernel_limit_is_the_larger_rate(self):
        assert make_report(1.0, 2.0).kernel_limit == 80.0

    def test_rendering(self, tmp_path):
        report = make_report(naive_rps=5.0, avpenet_rps=20.0)
        text = br.text_table(report)
        assert len(text.splitlines()) == 1 + len(report.cells)
        assert "4.00" in text  # (b)/(a) on the avpenet rows
        md = br.markdown(report, "img/bench.png")
        assert "![throughput and p99 latency](img/bench.png)" in md
        assert "`avpenet bench --quick`" in md
        assert "| model | 32 | avpenet | 20.0 | 4.00 |" in md
        assert "MISSED" in md  # the efficiency target, with what limits it
        png = br.plot(report, tmp_path / "img" / "bench.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_cpu_bound_caps_the_ratio_even_with_a_free_model(self):
        report = make_report(naive_rps=5.0, avpenet_rps=20.0)
        a = report.cell("naive", "model", 32)
        a.cpu_s = {"naive": 5.0}  # 100 ms per clip (50 clips)
        b = report.cell("avpenet", "model", 32)
        b.cpu_s = {"gateway": 8.0, "triton": 4.0}  # 60 ms per clip (200 clips), 20 of them the model
        bound = br.cpu_bound(report)
        assert bound["cpu_a"] == pytest.approx(0.1) and bound["cpu_b"] == pytest.approx(0.06)
        assert bound["model_b"] == pytest.approx(0.02)
        assert bound["bound"] == pytest.approx(2.5)  # 100 ms / (60 - 20) ms
        assert "**2.5x**" in br.markdown(report)

    def test_a_missed_ratio_says_what_the_target_leaves_and_the_heaviest_stage_spent(self):
        # naive: 600 ms per clip (50 clips) with both cells at the same busy share; 3x leaves 200 ms
        a = make_cell("naive", "long", n=50, cpu_s={"naive": 30.0}, cores=2, seconds=20.0)
        b = make_cell("avpenet", "long", n=120, cpu_s={"gateway": 6.0, "triton": 24.0}, cores=2, seconds=20.0)
        text = br.ratio_limit(a, b, 3.0)
        assert text.startswith("the target leaves (b) 200 ms of CPU per clip (naive's 600 / 3")
        assert "Triton alone spent 200 (" in text and "--windows 58" in text
        # (b) keeping fewer cores busy than naive leaves it less CPU per clip for the same rate
        b.cpu_s = {"gateway": 3.0, "triton": 12.0}  # 125 ms per clip at half naive's busy share
        assert br.ratio_limit(a, b, 3.0).startswith("the target leaves (b) 100 ms")
        video = make_cell("avpenet", "video", n=120, cpu_s={"features": 48.0, "triton": 1.0}, seconds=20.0)
        naive_video = make_cell("naive", "video", n=50, cpu_s={"naive": 30.0}, seconds=20.0)
        assert "FeatureExtractor alone spent 400 (face tracking" in br.ratio_limit(naive_video, video, 1.5)
        model = make_cell("avpenet", "model", n=120, seconds=20.0)
        assert br.ratio_limit(make_cell("naive", n=50, seconds=20.0), model, 1.3) == br.RATIO_LIMIT
        # the report's long-mix target carries it
        report = make_report(naive_rps=5.0, avpenet_rps=20.0)
        report.cells += [
            a,
            make_cell("avpenet", "long", n=120, cpu_s={"gateway": 6.0, "triton": 24.0}, seconds=20.0),
        ]
        long_ratio = next(t for t in br.targets(report) if t.name.startswith("long: throughput (b)/(a)"))
        assert not long_ratio.met and long_ratio.limit == br.ratio_limit(a, report.cells[-1], 3.0)

    def test_a_missed_peer_ratio_is_split_into_busy_share_and_cpu_per_clip(self):
        # (c): 100 clips, 4 CPU-s in 10 s on 2 cores = 40 ms a clip, 20% busy; (b): 60 clips, 3.6 CPU-s =
        # 60 ms a clip, 18% busy: 6 against 10 clips/s = 0.9 (busy) x 0.667 (CPU per clip)
        o = make_cell("ort", n=100, cpu_s={"ort": 3.0, "proxy": 0.6, "ray": 0.4})
        b = make_cell("avpenet", n=60, cpu_s={"gateway": 1.8, "triton": 0.9, "proxy": 0.6, "ray": 0.3})
        text = br.peer_limit(o, b)
        assert text.startswith(
            "busy 18% against (c)'s 20% (0.90x) and 60 ms of CPU per clip against 40 (0.67x)"
        )
        assert "gateway 30, Triton 15, proxy 10, Ray 5 against (c)'s one replica 30" in text
        assert text.endswith("proxy 6, Ray 4")
        report = make_report(naive_rps=5.0, avpenet_rps=20.0)
        report.cells = [c for c in report.cells if c.mix != "model" or c.concurrency != 32] + [o, b]
        report.cells.append(make_cell("naive", n=50, triton={}))
        peer = next(t for t in br.targets(report) if t.name.startswith("model: throughput (b)/(c)"))
        assert peer.measured == "0.60x" and not peer.met and peer.limit == text

    def test_a_missed_busy_share_names_the_other_systems_share_in_the_same_round(self):
        report = make_report(naive_rps=5.0, avpenet_rps=20.0)
        busy = next(t for t in br.targets(report) if t.name == "model: cores busy (b) at c=32")
        naive = report.cell("naive", "model", 32)
        assert not busy.met and busy.limit.endswith(f"; in the same round: naive {naive.cores_busy:.0%}")
        report.cells.append(make_cell("ort", cpu_s={"ort": 6.0}))  # 6 CPU-s in 10 s on 2 cores
        busy = next(t for t in br.targets(report) if t.name == "model: cores busy (b) at c=32")
        assert busy.limit.endswith(f"naive {naive.cores_busy:.0%} and the peer 30%")

    def test_json_round_trip_renders_the_same(self):
        report = make_report(naive_rps=5.0, avpenet_rps=20.0)
        again = br.report_from_dict(json.loads(bench.to_json(report)))
        assert br.markdown(again) == br.markdown(report)


def test_flops_per_window_counts_the_frontend_as_its_own_part():
    """The frontend runs through a method, not `__call__`: its DFT and mel MatMuls are not the fusion's."""
    from avpenet import contract as C
    from avpenet.model import AVPENet
    from loadtests import kernels

    flops = kernels.flops_per_window(AVPENet().eval())
    n_freq = C.N_FFT // 2 + 1
    dft_and_mel = 2 * C.MEL_FRAMES * (C.N_FFT * 2 * n_freq + n_freq * C.N_MELS)  # 1 multiply-add = 2 FLOPs
    assert flops[C.AUDIO_FRONTEND.name] == dft_and_mel
    assert 0 < flops[C.FUSION.name] < flops["total"] - dft_and_mel
    assert sum(v for k, v in flops.items() if k != "total") == pytest.approx(flops["total"])


def test_capacity_counts_a_long_clip_as_the_bed_seconds_its_windows_serve():
    """A 60-s clip (58 windows) serves a bed for 58 s; sized as one request per second it would need 58x the
    cores. Same CPU per request in both cells here, so the long mix needs 1/58 of the cores (rounded up)."""
    short = make_cell(mix="model", n=100)
    long = make_cell(mix="long", n=100, windows=100 * 58, media_seconds=60.0 * 100)
    report = make_report(10, 10)
    report.cells = [short, long]
    header, *rows = br.capacity_rows(report, beds=(58, 580))
    by_mix = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert by_mix["model"]["CPU-s per request"] == by_mix["long"]["CPU-s per request"]
    assert by_mix["long"]["windows per request"] == "58" and by_mix["model"]["windows per request"] == "1"
    per_request = short.server_cpu_s / short.requests
    assert by_mix["model"]["cores for 58 beds"] == str(math.ceil(58 * per_request / 0.6))
    assert by_mix["long"]["cores for 58 beds"] == str(math.ceil(per_request / 0.6))
    assert by_mix["long"]["cores for 580 beds"] == str(math.ceil(10 * per_request / 0.6))


def _round(r: int, naive_n: int, ort_n: int, avpenet_n: int, mix: str = "model") -> list[br.Cell]:
    return [
        make_cell("naive", mix, n=naive_n, triton={}, round=r),
        make_cell("ort", mix, n=ort_n, triton={}, round=r),
        make_cell("avpenet", mix, n=avpenet_n, round=r),
    ]


def test_rounds_report_the_median_ratio_with_its_own_three_systems_and_keep_the_others():
    # (b)/(a) per round: 1.0, 3.0, 2.0 on the model mix; the video mix has one round
    rounds = [
        _round(1, 100, 150, 100) + _round(1, 50, 50, 50, mix="video"),
        _round(2, 40, 150, 120),
        _round(3, 60, 90, 120),
    ]
    cells, others = br.median_round(rounds)
    model = {c.system: c for c in cells if c.mix == "model"}
    assert {c.round for c in model.values()} == {3}  # the median round, all three systems from it
    assert model["avpenet"].throughput / model["naive"].throughput == pytest.approx(2.0)
    assert sorted({c.round for c in others}) == [1, 2] and len(others) == 6
    assert [c.round for c in cells if c.mix == "video"] == [1, 1, 1]
    assert br.median_round([rounds[0], rounds[1]])[0][0].round == 1  # even count: the lower middle

    report = make_report(naive_rps=5.0, avpenet_rps=20.0)
    report.cells, report.other_rounds = cells, others
    rows = br.round_rows(report)
    assert [r[2] for r in rows[1:] if r[0] == "model"] == ["1", "2", "3"]
    assert [r[6] for r in rows[1:] if r[0] == "model"] == ["1.00", "3.00", "2.00"]
    assert [r[-1] for r in rows[1:] if r[0] == "model"] == ["", "", "yes"]
    md = br.markdown(report)
    assert "## Rounds" in md and "| model | 32 | 2 | 4.0 | 15.0 | 12.0 | 3.00 | 0.80 |" in md
    again = br.report_from_dict(json.loads(bench.to_json(report)))
    assert br.markdown(again) == md  # the other rounds survive the JSON (docs/img/bench.json)
    assert "## Rounds" not in br.markdown(make_report(naive_rps=5.0, avpenet_rps=20.0))  # one round: none


def test_cores_busy_counts_the_span_of_the_cpu_snapshots_not_only_the_window():
    """CPU is read at the snapshots around the window; by the window alone, 4-s cells read >100% busy."""
    span = make_cell(seconds=4.0, cpu_s={"gateway": 8.4}, machine_busy_s=8.4, cpu_seconds=4.2)
    assert span.cores_busy == pytest.approx(1.0) and span.other_load == pytest.approx(0.0)
    saved_before = make_cell(seconds=4.0, cpu_s={"gateway": 8.0}, machine_busy_s=8.0)  # no cpu_seconds kept
    assert saved_before.cores_busy == pytest.approx(1.0)


def test_failures_keep_when_they_were_answered_and_the_notes_show_it_with_the_share(refused):
    failed = [refused(15_400.0, 503, "FeaturesUnavailable"), refused(15_900.0, 503, "FeaturesUnavailable")]
    failed.append(refused(12.0, 429, "Overloaded"))
    by_kind = bench.error_latencies(failed)
    assert by_kind == {"HTTP 503 FeaturesUnavailable": [15_400.0, 15_900.0], "HTTP 429 Overloaded": [12.0]}
    kinds = bench.error_kinds(d.detail for d in failed)
    share = [0.8, 0.45]
    cut = make_cell("avpenet", "video", errors=3, error_kinds=kinds, error_ms=by_kind, admit_share=share)
    calm = make_cell("avpenet", "model", admit_share=[0.8, 0.8])
    unread = make_cell("naive", "video")
    text = " ".join(bench.notes([cut, calm, unread]))
    assert "HTTP 503 FeaturesUnavailable x2, answered after 15.4 s-15.9 s" in text
    assert "HTTP 429 Overloaded x1, answered after 12 ms" in text
    assert f"below its default {bench.ADMIT_SHARE_DEFAULT}" in text
    assert "video c=32 round 1 (0.80 -> 0.45)" in text
    assert "model c=32" not in text  # a cell whose share stayed at its default is not named
    again = br.report_from_dict(json.loads(bench.to_json(_report_with(cut))))
    assert again.cells[0].error_ms == by_kind and again.cells[0].admit_share == share


def _report_with(cell: br.Cell) -> br.Report:
    report = make_report(10, 20)
    report.cells[:] = [cell]
    return report


def test_the_recorded_command_says_how_it_was_measured_not_where_it_was_written():
    argv = ["avpenet", "bench", "--concurrency", "32", "--markdown", "/tmp/x/B.md", "--mixes", "model"]
    assert bench.recorded_command(argv) == "avpenet bench --concurrency 32 --mixes model"
    assert bench.recorded_command([*argv[:2], "--markdown=/tmp/B.md", "--quick"]) == "avpenet bench --quick"
    assert bench.recorded_command(["python", "-c"]) == "avpenet bench"
