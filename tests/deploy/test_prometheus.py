"""A real Prometheus (Debian's `prometheus`) scrapes the live local stack with the repo's scrape config, and
PromQL over its HTTP API finds Triton's and the gateway's series after traffic.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from avpenet import contract
from ensemble.client import infer_inputs
from ensemble.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = ROOT / "monitoring" / "prometheus.yml"
BIND_ATTEMPTS = 3
READY_TIMEOUT_S = 60.0  # start-up on a busy 2-core box; not a speed target


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus missing: `make setup` apt-installs it"
    ),
]


def scrape_config_for(targets: dict[str, str], rules_dir: Path, interval: str = "1s") -> dict:
    """The repo's prometheus.yml, each job's target set to the live address (jobs not given are dropped)."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval  # rules see the first scrapes within seconds
    config["rule_files"] = [str(rules_dir / Path(p).relative_to("rules")) for p in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


class Prometheus:
    """`prometheus` on a free loopback port with a private TSDB; stopped (and its data removed) on exit."""

    def __init__(self, config: dict, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        for attempt in range(1, BIND_ATTEMPTS + 1):  # the free port may be taken before prometheus binds it
            if self._start():
                return self
            log = (self.workdir / "prometheus.log").read_text()
            assert "address already in use" in log and attempt < BIND_ATTEMPTS, log
            self.port = free_port()
        raise AssertionError("unreachable")

    def _start(self) -> bool:
        """True once ready; False when prometheus exited (its log says why)."""
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "prometheus.log", "wb"),  # noqa: SIM115 - closed with the process
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready in {READY_TIMEOUT_S:.0f} s")

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, promql: str, timeout_s: float = 30) -> list[dict]:
        """The query's result vector once it is non-empty (scrapes land every second)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.api("query", query=promql)["result"]
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no series for {promql!r} after {timeout_s:.0f} s")


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
    # The repo's rules are loaded, and the alert on Triton being down clears while it is up: the first
    # evaluation may run before the first scrape (absent(up) is true then), so it can be pending at first.
    groups = {g["name"]: g for g in prometheus.api("rules")["groups"]}
    assert {"avpenet-recording", "avpenet-alerts"} <= groups.keys()
    assert _alerts_clear(prometheus, "AvpenetTritonNotReady"), prometheus.api("alerts")["alerts"]


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
