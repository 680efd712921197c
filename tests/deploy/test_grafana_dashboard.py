"""monitoring/grafana/avpenet-serve.json: it parses, has the structure Grafana's dashboard model needs, every
query is valid PromQL (promtool) and every metric a query reads is one the stack exports:
- the gateway: the names in a real `telemetry.Metrics()` exposition (the registry each replica serves);
- the recording rules of monitoring/rules/avpenet-alerts.yml;
- Ray Serve: the metrics Ray's own source declares (`metrics.Counter/Gauge/Histogram("serve_...")`), exported
  with Ray's `ray_` prefix and Prometheus' suffixes;
- Triton: a live tritonserver's /metrics (the session's server), plus GPU-only series, which a CPU server
  does not export, found by name in the libtritonserver the server runs;
- kube-state-metrics: the two pod-status series AvpenetPodNotReady reads (a cluster's: not checked here).
And every series an alert compares is on some panel.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from support.alert_rules import alert, latency_thresholds_s, rules

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "avpenet-serve.json"
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table"}
GPU_ONLY = {"nv_gpu_utilization"}  # Triton exports these on GPU nodes only
# kube-state-metrics exports these in a cluster (kube-prometheus-stack: docs/DEPLOY.md), not the local stack
KUBE_STATE_METRICS = {"kube_pod_status_ready", "kube_pod_status_phase"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
KEYWORDS |= {"offset", "inf", "nan"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _queries() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (not functions, keywords, label names or durations)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", e)
    return {n for n in names if n not in KEYWORDS}


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, stage) (rate(foo_bucket{a="b", c=~"x|y"}[5m]))) / on (job) bar:x'
    )
    assert metric_names(expr) == {"foo_bucket", "bar:x"}


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    source = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"] == source and t["expr"].strip() for t in panel["targets"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: `make setup` installs it")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    queries = []
    for i, expr in enumerate(_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
        queries.append({"record": f"dashboard:query{i}", "expr": expr})
    groups = {"groups": [{"name": "dashboard", "rules": queries}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(groups))
    result = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "queries.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ray_serve_metrics() -> set[str]:
    import ray.serve

    suffixes = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
    declared = re.compile(r"metrics\.(Counter|Gauge|Histogram)\(\s*(?:name=)?f?\"(serve_[a-z_{}]+)\"")
    names = set()
    for source in Path(ray.serve.__file__).parent.rglob("*.py"):
        for kind, name in declared.findall(source.read_text()):
            for protocol in ("http", "grpc"):
                names |= {f"ray_{name.replace('{protocol_name}', protocol)}{s}" for s in suffixes[kind]}
    assert "ray_serve_num_http_requests_total" in names, "Ray's metric declarations moved: update this reader"
    return names


def _gateway_metrics() -> set[str]:
    """Series names of every family the gateway registers (labelled families have no sample until used)."""
    from prometheus_client.parser import text_string_to_metric_families

    from preprocess_service import telemetry
    from preprocess_service.stream.metrics import StreamMetrics

    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    metrics = telemetry.Metrics()
    StreamMetrics(metrics.registry)  # the monitoring streams' families (stream/route.py registers them there)
    text = metrics.exposition().decode()
    return {f.name + s for f in text_string_to_metric_families(text) for s in suffixes.get(f.type, ("",))}


def _recording_rules() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def _triton_library() -> bytes:
    import pytriton

    libs = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    (library,) = libs.glob("libtritonserver*.so*")
    return library.read_bytes()


def _score_once(triton_server) -> None:
    """One ensemble request of zeros: Triton exports a model's request counters once it has served one."""
    import tritonclient.http as httpclient

    from avpenet import contract
    from ensemble.client import infer_inputs

    client = httpclient.InferenceServerClient(triton_server.http_url)
    zeros = contract.zero_inputs(contract.ENSEMBLE, 1)
    client.infer(contract.ENSEMBLE.name, infer_inputs(httpclient, contract.ENSEMBLE, zeros))


@pytest.mark.integration
def test_every_metric_the_dashboard_reads_is_exported(triton_server) -> None:
    _score_once(triton_server)
    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    # Names as exposed (prometheus_client's parser would rename counters to *_total).
    triton = set(re.findall(r"^([a-zA-Z_:][\w:]*)[{ ]", text, flags=re.MULTILINE))
    exported = triton | _gateway_metrics() | _recording_rules() | _ray_serve_metrics() | {"up"}
    used = set().union(*(metric_names(q) for q in _queries()))
    assert {n for n in used if n.startswith("nv_")} - GPU_ONLY, (
        "no Triton series checked against the live server"
    )
    missing = used - exported - GPU_ONLY - KUBE_STATE_METRICS
    assert missing == set(), f"the dashboard reads series nothing exports: {sorted(missing)}"
    library = _triton_library()
    assert all(name.encode() in library for name in GPU_ONLY & used)


def test_latency_stat_colours_each_request_kind_at_its_alert_threshold() -> None:
    """The p99 stat shows one value per kind, each red past the latency alert's threshold for that kind."""
    record = "avpenet:gateway_latency_p99_seconds:rate5m"
    (panel,) = [p for p in _dashboard()["panels"] if any(t["expr"] == record for t in p.get("targets", []))]
    assert [t["legendFormat"] for t in panel["targets"]] == ["{{kind}}"]
    red = {
        o["matcher"]["options"]: o["properties"][0]["value"]["steps"][-1]["value"]
        for o in panel["fieldConfig"]["overrides"]
    }
    latency = alert("AvpenetP99LatencyHigh")
    assert red == latency_thresholds_s(latency["expr"])


def test_every_alert_signal_is_on_the_dashboard() -> None:
    """An SRE paged by an alert finds the series it compares on some panel: the hourly warnings'
    avpenet:*:rate1h ratios were on none. The minimum counts (`*:increaseN`) only guard a quiet night."""
    shown = set().union(*(metric_names(q) for q in _queries()))
    missing = {}
    for rule in (r for r in rules() if "alert" in r):
        signals = {n for n in metric_names(rule["expr"]) if not re.search(r":increase\d+[mh]$", n)}
        if signals - shown:
            missing[rule["alert"]] = sorted(signals - shown)
    assert missing == {}, f"alerts whose signals no panel shows: {missing}"
