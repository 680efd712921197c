"""monitoring/: the alert rules pass `promtool check rules` and their unit tests, the local scrape config is
valid, and the prometheus-adapter query behind the Triton HPA computes queue time per request as documented.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.alert_rules import RULES, rules

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULE_TESTS = MONITORING / "rules" / "avpenet-alerts.test.yml"
ALERTS = {
    "AvpenetTritonNotReady",
    "AvpenetTritonAbsent",
    "AvpenetTritonPodDown",
    "AvpenetPodNotReady",
    "AvpenetGatewayMetricsAbsent",
    "AvpenetHighErrorRatio",
    "AvpenetSustainedErrorRatio",
    "AvpenetP99LatencyHigh",
    "AvpenetTritonQueueTimeHigh",
    "AvpenetProxyRejections",
    "AvpenetSustainedProxyRejections",
    "AvpenetStreamsBehind",
    "AvpenetStreamResumesLost",
    "AvpenetStreamsUnprocessable",
}

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: `make setup` apt-installs Debian's prometheus"
)


def _promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [r for r in rules() if "alert" in r]
    assert {r["alert"] for r in alerts} == ALERTS
    assert all(r.get("annotations", {}).get("runbook") for r in alerts)


def test_every_runbook_anchor_exists() -> None:
    """Each alert's `runbook` names a file and an anchor (`<a id="...">`) that is there."""
    for rule in (r for r in rules() if "alert" in r):
        path, anchor = rule["annotations"]["runbook"].split("#")
        assert f'<a id="{anchor}"></a>' in (ROOT / path).read_text(), (rule["alert"], anchor)


def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert tested == ALERTS, "every alert needs a promtool unit test"


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule file with a weakened threshold must fail the same unit tests (the tests have teeth)."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.01", "> 0.5"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "AvpenetHighErrorRatio" in result.stdout + result.stderr


def test_local_scrape_config_is_valid() -> None:
    result = _promtool("check", "config", str(MONITORING / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {
        c["job_name"] for c in yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert jobs == {"triton", "avpenet-gateway", "ray"}


def test_gateway_metric_names_in_rules_are_the_gateways() -> None:
    from preprocess_service import telemetry

    text = RULES.read_text()
    assert f"{telemetry.REQUESTS}_total" in text
    assert f"{telemetry.STAGE_SECONDS}_bucket" in text
    assert f"absent({telemetry.IN_FLIGHT}{{" in text  # the series every replica always exports
    assert "total" in telemetry.STAGES


def test_prometheus_adapter_query_is_queue_time_per_request(tmp_path: Path) -> None:
    """The adapter's metricsQuery, with the adapter's template filled in for pods, yields µs per request."""
    adapter = yaml.safe_load((MONITORING / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    query = (
        rule["metricsQuery"]
        .replace("<<.GroupBy>>", "pod")
        .replace("<<.LabelMatchers>>", 'namespace="avpenet",pod=~"triton-.*"')
    )
    assert "<<" not in query
    (tmp_path / "adapter.yml").write_text(
        yaml.safe_dump(
            {"groups": [{"name": "adapter", "rules": [{"record": "adapter:value", "expr": query}]}]}
        )
    )
    busy = 'namespace="avpenet", pod="triton-a"'
    idle = 'namespace="avpenet", pod="triton-b"'
    series = [  # pod a: 60 ensemble requests/min queueing 40 ms + 30 ms in two steps; pod b: idle
        (f'nv_inference_request_success{{{busy}, model="avpenet"}}', "0+60x10"),
        (f'nv_inference_queue_duration_us{{{busy}, model="avpenet"}}', "0+9999999x10"),
        (f'nv_inference_queue_duration_us{{{busy}, model="audio_encoder"}}', "0+2400000x10"),
        (f'nv_inference_queue_duration_us{{{busy}, model="fusion"}}', "0+1800000x10"),
        (f'nv_inference_request_success{{{idle}, model="avpenet"}}', "0x10"),
        (f'nv_inference_queue_duration_us{{{idle}, model="fusion"}}', "0x10"),
    ]
    tests = {
        "rule_files": ["adapter.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [
                    {
                        "expr": "adapter:value",
                        "eval_time": "8m",
                        "exp_samples": [
                            {"labels": 'adapter:value{pod="triton-a"}', "value": 70000},
                            {"labels": 'adapter:value{pod="triton-b"}', "value": 0},
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "adapter.test.yml").write_text(yaml.safe_dump(tests))
    result = _promtool("test", "rules", "adapter.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
