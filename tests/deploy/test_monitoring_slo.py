"""The load test's SLOs are the alert thresholds, and its verdict logic can fail (no services needed)."""

from __future__ import annotations

from pathlib import Path

from support.alert_rules import alert, latency_thresholds_s

from loadtests import clips
from loadtests import run as loadtest
from preprocess_service import telemetry


def test_slos_equal_alert_thresholds() -> None:
    thresholds = latency_thresholds_s(alert("AvpenetP99LatencyHigh")["expr"])
    assert set(thresholds) == set(telemetry.KINDS), "every request kind has its latency threshold"
    assert thresholds == {kind: ms / 1000 for kind, ms in loadtest.SLO_P99_MS.items()}
    assert (
        f"avpenet:gateway_error_ratio:rate5m > {loadtest.SLO_ERROR_RATIO:g}\n"
        in alert("AvpenetHighErrorRatio")["expr"]
    )


def test_locust_rows_map_to_the_gateways_request_kinds() -> None:
    kinds = {name: loadtest.gateway_kind(f"grpc {name}") for name in clips.KINDS}
    assert kinds == {
        "av_3s": "video",
        "av_10s": "video",  # 8 windows
        "audio_3s": "light",
        "audio_30s": "light_long",  # 28 windows
        "landmarks_3s": "light",
        "landmarks_60s": "light_long",  # 58 windows
    }
    assert loadtest.gateway_kind("Aggregated") is None


def test_verdict_passes_and_fails() -> None:
    def row(name: str, p99_ms: float, failures: int = 0) -> loadtest.Row:
        return loadtest.Row(name, 500, failures, 100, 300, p99_ms, 10)

    def rows(*requests: loadtest.Row) -> list[loadtest.Row]:
        total = loadtest.Row("ALL", sum(r.requests for r in requests), sum(r.failures for r in requests),
                             100, 300, max(r.p99_ms for r in requests), 20)  # fmt: skip
        return [*requests, total]

    light, video = "http landmarks_3s", "http av_3s"
    ok = rows(row(light, 1500, failures=5), row(video, 8000))
    assert loadtest.verdict(ok) == []  # an 8-s video is within its kind's 10 s, a 1.5-s light within 2 s
    slow_light = rows(row(light, 2500), row(video, 1))
    assert loadtest.verdict(slow_light) == ["http landmarks_3s (light) p99 2500 ms > 2000 ms"]
    assert loadtest.verdict(rows(row(video, 12000))) == ["http av_3s (video) p99 12000 ms > 10000 ms"]
    assert "p99 8000 ms > 5000 ms" in loadtest.verdict(ok, p99_ms=5000)[0]  # one bound for all (soak)
    assert "error ratio" in loadtest.verdict(rows(row(light, 1500, failures=11)))[0]
    assert loadtest.verdict([loadtest.Row("ALL", 0, 0, 0, 0, 0, 0)]) == ["no request completed"]


def test_read_stats_parses_locust_csv(tmp_path: Path) -> None:
    header = (
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
        "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
        "99.99%,100%"
    )
    rows = [
        "POST,http av_3s,10,1,120,130,90,400,500,2.0,0.2,120,130,140,150,200,250,300,390,400,400,400",
        ",Aggregated,10,1,120,130,90,400,500,2.0,0.2,120,130,140,150,200,250,300,390,400,400,400",
    ]
    (tmp_path / "s.csv").write_text("\n".join([header, *rows]) + "\n")
    parsed = loadtest.read_stats(tmp_path / "s.csv")
    assert [r.name for r in parsed] == ["http av_3s", "ALL"]
    assert parsed[-1].p99_ms == 390 and parsed[-1].error_ratio == 0.1


def test_mixes_are_distributions_over_known_kinds() -> None:
    for name, mix in clips.MIXES.items():
        assert set(mix) <= set(clips.KINDS), name
        assert abs(sum(mix.values()) - 1.0) < 1e-9, name
    used = set().union(*(set(mix) for mix in clips.MIXES.values()))
    assert used == set(clips.KINDS), "every clip kind is sent by some mix"


def test_every_latency_threshold_is_a_bucket_edge() -> None:
    """histogram_quantile interpolates inside a bucket: a threshold between two edges would page on requests
    below it (all light requests at 1.1 s read as a p99 of 2.49 s with edges 1 and 2.5)."""
    thresholds = latency_thresholds_s(alert("AvpenetP99LatencyHigh")["expr"])
    assert set(thresholds.values()) <= set(telemetry.LATENCY_BUCKETS)
