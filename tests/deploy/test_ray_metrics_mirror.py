"""Per-replica gateway metrics as k8s scrapes them: each Gateway replica copies its prometheus-client series
to Ray's metrics export port (preprocess_service/ray_metrics.py), and a real Prometheus, configured with the
PodMonitor's relabelings from k8s/base/podmonitors.yaml, reads them back under their own names and job
`avpenet-gateway`, one series per replica, while Ray Serve's own series stay under job `ray`.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from support.prometheus import Prometheus  # Debian's prometheus on loopback

ROOT = Path(__file__).resolve().parents[2]
PODMONITOR = ROOT / "k8s" / "base" / "podmonitors.yaml"

pytestmark = pytest.mark.integration


def _snake(relabelings: list[dict]) -> list[dict]:
    """prometheus-operator's relabeling spelling (camelCase) in Prometheus' scrape config (snake_case)."""
    return [{re.sub(r"([A-Z])", r"_\1", k).lower(): v for k, v in r.items()} for r in relabelings]


def _rays_metrics_port() -> int:
    import ray

    (node,) = [n for n in ray.nodes() if n["Alive"]]
    return int(node["MetricsExportPort"])


def _score_one(http_url: str) -> None:
    from support.gateway import API_KEY, face_track, wav_bytes

    from preprocess_service.client import score_http
    from preprocess_service.protocol import MediaPart, ScoreRequest

    request = ScoreRequest(
        audio=MediaPart(data=wav_bytes(3.0), filename="a.wav"),
        landmarks=MediaPart(data=face_track(3.0).to_npz_bytes(), filename="f.npz"),
        age_group="adult",
    )
    score_http(http_url, request, api_key=API_KEY)


def test_each_replica_exports_its_gateway_metrics_through_rays_port(gateway_stack, tmp_path: Path) -> None:
    from preprocess_service.telemetry import IN_FLIGHT, REQUESTS

    _score_one(gateway_stack.http_url)
    port = _rays_metrics_port()
    mirrored = re.compile(rf'^ray_{REQUESTS}_total{{[^}}]*replica="[^"]+"[^}}]*status="200"', re.MULTILINE)
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline and not mirrored.search(text):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        time.sleep(1)
    assert mirrored.search(text), f"ray_{REQUESTS}_total with a replica label never appeared on Ray's port"

    (monitor,) = [d for d in yaml.safe_load_all(PODMONITOR.read_text()) if d["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    job = {
        "job_name": "podmonitor",
        "metrics_path": endpoint["path"],
        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
        "relabel_configs": _snake(endpoint["relabelings"]),
        "metric_relabel_configs": _snake(endpoint["metricRelabelings"]),
    }
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}
    with Prometheus(config, tmp_path) as prometheus:
        series = prometheus.wait_for(f'{REQUESTS}_total{{job="avpenet-gateway", status="200"}}')
        assert all(s["metric"]["deployment"] == "Gateway" and s["metric"]["replica"] for s in series)
        # what AvpenetGatewayMetricsAbsent watches: a series each replica exports with or without requests
        assert prometheus.wait_for(f'{IN_FLIGHT}{{job="avpenet-gateway", deployment="Gateway"}}')
        assert prometheus.wait_for('ray_serve_num_http_requests_total{job="ray"}')
        leftover = prometheus.api("query", query='count({__name__=~"ray_avpenet_.*"})')["result"]
        assert leftover == [], "every mirrored series is renamed back"
