"""A real Prometheus (Debian's `prometheus`) scrapes the live local stack with the repo's scrape config, and
PromQL over its HTTP API finds Triton's and the gateway's series after traffic.
"""

from __future__ import annotations

import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.prometheus import Prometheus, scrape_config_for

from avpenet import contract
from ensemble.client import infer_inputs

ROOT = Path(__file__).resolve().parents[2]


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus missing: `make setup` apt-installs it"
    ),
]


def _score_directly(http_url: str, n: int) -> None:
    """n ensemble requests of one zero window each, straight to Triton (the gateway-free traffic source)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url)
    zeros = contract.zero_inputs(contract.ENSEMBLE, 1)
    for _ in range(n):
        client.infer(contract.ENSEMBLE.name, infer_inputs(httpclient, contract.ENSEMBLE, zeros))


@pytest.fixture()
def prometheus_on_triton(triton_server, tmp_path: Path) -> Iterator[Prometheus]:
    config = scrape_config_for(
        {"triton": f"127.0.0.1:{triton_server.metrics_port}"}, ROOT / "monitoring" / "rules"
    )
    with Prometheus(config, tmp_path) as prometheus:
        yield prometheus


def test_prometheus_scrapes_triton_series_after_traffic(
    triton_server, prometheus_on_triton: Prometheus
) -> None:
    prometheus = prometheus_on_triton
    (up,) = prometheus.wait_for('up{job="triton"} == 1')
    before = prometheus.api(
        "query", query=f'nv_inference_request_success{{model="{contract.ENSEMBLE.name}"}}'
    )
    sent = 5
    _score_directly(triton_server.http_url, sent)
    baseline = float(before["result"][0]["value"][1]) if before["result"] else 0.0
    deadline = time.monotonic() + 30
    count = baseline
    while time.monotonic() < deadline and count < baseline + sent:
        result = prometheus.api(
            "query", query=f'nv_inference_request_success{{job="triton", model="{contract.ENSEMBLE.name}"}}'
        )
        count = float(result["result"][0]["value"][1]) if result["result"] else 0.0
        time.sleep(0.5)
    assert count >= baseline + sent
    models = {s["metric"]["model"] for s in prometheus.wait_for('nv_inference_exec_count{job="triton"}')}
    assert {m.name for m in contract.MODELS} <= models
    # The repo's rules are loaded, and the alerts on Triton being down clear while it is up: the first
    # evaluation may run before the first scrape (absent(up) is true then), so one can be pending at first.
    groups = {g["name"]: g for g in prometheus.api("rules")["groups"]}
    assert {"avpenet-recording", "avpenet-alerts"} <= groups.keys()
    for name in ("AvpenetTritonNotReady", "AvpenetTritonAbsent"):
        assert _alerts_clear(prometheus, name), prometheus.api("alerts")["alerts"]


def _alerts_clear(prometheus: Prometheus, name: str, timeout_s: float = 30) -> bool:
    """True once no alert of that name is pending or firing (rules are evaluated every second here)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == name]:
            return True
        time.sleep(0.5)
    return False


def test_prometheus_scrapes_gateway_and_triton_series_after_gateway_traffic(
    gateway_stack, tmp_path: Path
) -> None:
    """The whole local stack: clips scored through the gateway show up in both jobs' series."""
    from support.gateway import API_KEY, face_track, wav_bytes

    from preprocess_service.client import score_http
    from preprocess_service.protocol import MediaPart, ScoreRequest
    from preprocess_service.telemetry import REQUESTS, SCORES, STAGE_SECONDS

    gateway = urllib.parse.urlsplit(gateway_stack.http_url).netloc
    triton = f"127.0.0.1:{gateway_stack.triton.metrics_port}"
    config = scrape_config_for({"triton": triton, "avpenet-gateway": gateway}, ROOT / "monitoring" / "rules")
    with Prometheus(config, tmp_path) as prometheus:
        prometheus.wait_for('up{job="avpenet-gateway"} == 1')
        prometheus.wait_for('up{job="triton"} == 1')
        request = ScoreRequest(
            audio=MediaPart(data=wav_bytes(4.0), filename="a.wav"),
            landmarks=MediaPart(data=face_track(4.0).to_npz_bytes(), filename="f.npz"),
            age_group="adult",
        )
        for _ in range(3):
            score_http(gateway_stack.http_url, request, api_key=API_KEY)
        ok = prometheus.wait_for(
            f'sum({REQUESTS}_total{{job="avpenet-gateway", route="/v1/score", status="200"}}) >= 3'
        )
        assert float(ok[0]["value"][1]) >= 3
        stages = prometheus.wait_for(f'{STAGE_SECONDS}_count{{job="avpenet-gateway"}} > 0')
        assert {"decode", "features", "triton", "total"} <= {s["metric"]["stage"] for s in stages}
        assert prometheus.wait_for(f'{SCORES}_count{{job="avpenet-gateway"}} > 0')
        served = prometheus.wait_for(
            f'nv_inference_request_success{{job="triton", model="{contract.ENSEMBLE.name}"}} > 0'
        )
        assert served
