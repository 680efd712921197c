"""The bench's third system (the one-process ONNX Runtime peer), the `long` mix and core utilisation."""

from __future__ import annotations

import pytest
from support.bench_reports import make_cell, make_report

from loadtests import benchreport as br
from loadtests import clips


def three_systems(naive: float, ort: float, avpenet: float) -> br.Report:
    report = make_report(naive_rps=naive, avpenet_rps=avpenet)
    for mix in ("model", "long"):
        for system, rps in (("naive", naive), ("ort", ort), ("avpenet", avpenet)):
            if report.cell(system, mix, 32) is None:
                report.cells.append(make_cell(system, mix, 32, n=int(rps * 10), triton={}))
    return report


def test_cores_busy_is_server_cpu_over_capacity():
    # 6.5 server CPU-s (the load generator's 1.0 excluded) over 2 cores x 10 s
    assert make_cell(seconds=10.0).cores_busy == pytest.approx(0.325)


def test_ort_replica_is_its_own_cpu_group():
    assert br.classify_process("ray::ServeRepli", "ray::ServeReplica:ort:OrtScorer") == "ort"
    assert "ort" in br.GROUPS
    assert make_cell("ort", cpu_s={"ort": 3.0}, n=10).features_ms_per_media_s == pytest.approx(100.0)


def test_table_shows_both_ratios_per_mix():
    report = three_systems(naive=5.0, ort=10.0, avpenet=20.0)
    rows = {(r[0], r[1], r[2]): r for r in br.cell_rows(report)}
    header = br.HEADER
    avpenet = rows[("long", "32", "avpenet")]
    assert avpenet[header.index("(b)/(a)")] == "4.00"
    assert avpenet[header.index("(b)/(c)")] == "2.00"
    assert rows[("long", "32", "ort")][header.index("(b)/(a)")] == "2.00"
    assert rows[("long", "32", "ort")][header.index("(b)/(c)")] == ""
    assert avpenet[header.index("cores busy %")] == "32"
    assert "(c) ONNX Runtime peer" in br.markdown(report)


def test_targets_per_mix_against_both_peers():
    targets = {t.name: t for t in br.targets(three_systems(naive=5.0, ort=25.0, avpenet=20.0))}
    assert targets["model: throughput (b)/(c) at c=32"].met is False  # 0.8x the ONNX Runtime peer
    assert targets["long: throughput (b)/(a) at c=32"].met  # 4x >= 3x
    assert targets["video: throughput (b)/(a) at c=32"].met  # 4x >= 1.5x
    assert targets["model: cores busy (b) at c=32"].met is False  # 32% < 90%
    assert {f"{m}: p99 (b) < (a) at c=32" for m in ("model", "long", "video")} <= set(targets)


def test_long_mix_is_a_minute_within_the_default_limit():
    from preprocess_service.settings import Limits

    (kind,) = clips.MIXES["long"]
    assert clips.KINDS[kind].seconds == Limits().max_duration_s == 60.0
    assert set(clips.KINDS[kind].fields) == {"audio", "landmarks"}


def test_failed_requests_are_counted_by_kind_and_named_in_the_notes():
    from loadtests import bench

    details = [
        'HTTP 503: b\'{"error":"Overloaded","detail":"x"}\'',
        'HTTP 503: b\'{"error": "Overloaded"}\'',
        "ServerDisconnectedError()",
    ]
    kinds = bench.error_kinds(details)
    assert kinds == {"HTTP 503 Overloaded": 2, "ServerDisconnectedError()": 1}
    cell = make_cell(errors=3, error_kinds=kinds)
    assert any("HTTP 503 Overloaded x2" in note for note in bench.notes([cell]))


def test_track_every_reaches_the_stack_and_both_peers():
    import argparse

    from loadtests import baseline, bench, ort_peer

    assert bench.stack_limits()["track_every"] == 1  # serve_config.yaml's: every frame
    assert bench.stack_limits(3)["track_every"] == 3
    for peer in (baseline, ort_peer):
        assert peer.app_config("repo", 3)["args"] == {"repo": "repo", "track_every": 3}
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args(["--track-every", "2"]).track_every == 2
    with pytest.raises(SystemExit):  # strides nobody measured are refused, as the gateway refuses them
        parser.parse_args(["--track-every", "4"])
