"""The load test's SLOs are the alert thresholds, and its verdict logic can fail (no services needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from loadtests import clips
from loadtests import run as loadtest

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "rules" / "avpenet-alerts.yml"


def _alert(name: str) -> dict:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    return next(r for r in rules if r.get("alert") == name)


def test_slos_equal_alert_thresholds() -> None:
    assert _alert("AvpenetP99LatencyHigh")["expr"].endswith(f"> {loadtest.SLO_P99_MS / 1000:g}")
    assert _alert("AvpenetHighErrorRatio")["expr"].endswith(f"> {loadtest.SLO_ERROR_RATIO:g}")


def test_verdict_passes_and_fails() -> None:
    ok = loadtest.Row("ALL", 1000, 5, 100, 300, 1500, 20)
    assert loadtest.verdict(ok) == []
    assert "p99" in loadtest.verdict(loadtest.Row("ALL", 1000, 0, 100, 300, 2500, 20))[0]
    assert "error ratio" in loadtest.verdict(loadtest.Row("ALL", 1000, 11, 100, 300, 1500, 20))[0]
    assert loadtest.verdict(loadtest.Row("ALL", 0, 0, 0, 0, 0, 0)) == ["no request completed"]


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
