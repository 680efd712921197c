"""Debian's `prometheus` on a loopback port, with the repo's scrape config pointed at live targets."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from ensemble.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = ROOT / "monitoring" / "prometheus.yml"
BIND_ATTEMPTS = 3
READY_TIMEOUT_S = 60.0  # start-up on a busy 2-core box; not a speed target


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
