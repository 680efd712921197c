"""The alerts that page stay quiet on what is not an incident (no promtool needed; the promtool unit tests
in monitoring/rules/avpenet-alerts.test.yml replay the same cases as series):

- the error-ratio and proxy alerts (5-minute and hourly) need a minimum count of failed requests besides
  their ratio, and their description and runbook say how many (a quiet ward's 2 failures among 20 requests
  is 10%); the hourly ones also need failures to go on for longer than one burst stays recent;
- a Triton pod's down warning holds longer than a pod takes to start (its target reads up == 0 from the
  image pull to the end of its model load), and the no-Triton page spares pods that young which never
  answered (a first deploy) while paging promptly for one that answered and stopped;
- with no Triton target at all (a first deploy's pods waiting for a GPU node are none), the page waits
  longer than a GPU node takes to be added;
- a running pod's not-Ready warning holds longer than a Triton pod loads its models unready and longer than
  any pod drains when it terminates, and spares pods that are not running yet (an image pull).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from support.alert_rules import alert

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "k8s" / "base"
TRITON = BASE / "triton-deployment.yaml"
DEFAULT_GRACE_S = 30  # a pod's terminationGracePeriodSeconds when it sets none
IMAGE_PULL_S = 600  # the NGC tritonserver image pulled onto a new GPU node (the rule's comment says so)
NODE_SCALE_UP_S = 600  # a GPU node added by the cluster autoscaler (3 to 10 minutes): its pods are no target


def _seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


@pytest.mark.parametrize(
    ("name", "count_rule"),
    [
        ("AvpenetHighErrorRatio", "avpenet:gateway_errors:increase5m"),
        ("AvpenetSustainedErrorRatio", "avpenet:gateway_errors:increase1h"),
        ("AvpenetProxyRejections", "avpenet:proxy_rejections:increase5m"),
        ("AvpenetSustainedProxyRejections", "avpenet:proxy_rejections:increase1h"),
    ],
)
def test_error_alerts_need_a_minimum_count_and_say_how_many(name: str, count_rule: str) -> None:
    rule = alert(name)
    guard = re.search(rf"\band {re.escape(count_rule)} >= (\d+)\b", rule["expr"])
    assert guard, f"{name} pages on any ratio over 1%, even 2 failures among a quiet night's 20 requests"
    count = int(guard.group(1))
    assert count >= 3, "a couple of failures must not page"
    assert f"at least {count} " in rule["annotations"]["description"]
    runbook = (ROOT / "docs" / "DEPLOY.md").read_text()
    entry = runbook.split(f"**{name}**", 1)[1].split("\n- ", 1)[0]
    assert f"at least {count} " in entry, f"docs/DEPLOY.md's {name} runbook names the minimum"


def _model_load_s() -> int:
    """The longest model load the kubelet waits for (the startupProbe's period x failures)."""
    (container,) = yaml.safe_load(TRITON.read_text())["spec"]["template"]["spec"]["containers"]
    probe = container["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


def test_the_pod_down_hold_outlasts_a_triton_start() -> None:
    load_s = _model_load_s()
    rule = alert("AvpenetTritonPodDown")
    hold_s = _seconds(rule["for"])
    assert hold_s >= load_s + IMAGE_PULL_S, (
        f"a starting pod reads up == 0 for up to {load_s} s of model load after its image pull: a hold of "
        f"{hold_s} s warns on every scale-up and model roll"
    )
    assert f"for {hold_s // 60} minutes" in rule["annotations"]["description"]


def test_the_not_ready_page_spares_a_pod_as_long_as_a_start_takes() -> None:
    """A target that never answered is starting until it is as old as the offset that proves its age."""
    rule = alert("AvpenetTritonNotReady")
    ages = re.findall(r'count by \(job\) \(up\{job="triton"\} offset (\d+[smh])\)', rule["expr"])
    assert ages, "a first deploy's pods read up == 0 through their image pull and model load: that pages"
    start_s = _seconds(ages[0])
    load_s = _model_load_s()
    assert start_s >= load_s + IMAGE_PULL_S, (
        f"a starting pod reads up == 0 for up to {IMAGE_PULL_S + load_s} s: sparing it {start_s} s pages "
        "a first deploy"
    )
    assert rule["for"] == "2m", "a pod that served and stopped still pages promptly"
    assert f"younger than {start_s // 60} minutes" in rule["annotations"]["description"]


def test_no_triton_target_pages_only_after_a_gpu_node_could_have_come() -> None:
    """A first deploy's pods are no target while they wait for a GPU node: a bare `absent(up)` in the prompt
    page paged every such deploy at 2 minutes."""
    not_ready = alert("AvpenetTritonNotReady")["expr"]
    assert not re.search(r"\)\s*or absent\(", not_ready), "no target at all pages at 2 minutes"
    rule = alert("AvpenetTritonAbsent")
    hold_s = _seconds(rule["for"])
    assert rule["expr"].strip() == 'absent(up{job="triton"})'
    assert hold_s > NODE_SCALE_UP_S, f"a GPU node takes up to {NODE_SCALE_UP_S} s: a {hold_s}-s hold pages"
    assert hold_s == _seconds(alert("AvpenetTritonPodDown")["for"]), "a pod's start is held alike"
    assert f"for {hold_s // 60} minutes" in rule["annotations"]["description"]


@pytest.mark.parametrize(
    ("name", "recent_rule"),
    [
        ("AvpenetSustainedErrorRatio", "avpenet:gateway_errors:increase"),
        ("AvpenetSustainedProxyRejections", "avpenet:proxy_rejections:increase"),
    ],
)
def test_one_burst_of_failures_does_not_hold_the_hourly_warning(name: str, recent_rule: str) -> None:
    """A burst stays in the hour's count for an hour: the warning also needs a failure in the last minutes,
    a check that a burst fails within the hold, so only failures that go on warn."""
    rule = alert(name)
    recent = re.search(rf"max_over_time\({re.escape(recent_rule)}(\d+m)\[(\d+m)\]\) > 0", rule["expr"])
    assert recent, "one burst of failures (a pod restart) would warn for the hour it stays in the window"
    recent_s = _seconds(recent.group(1)) + _seconds(recent.group(2))
    assert recent_s < _seconds(rule["for"]), "a burst is still recent when the hold ends: it warns"
    assert f"the latest in the last {recent_s // 60} minutes" in rule["annotations"]["description"]


def _grace_periods_s(node: object) -> list[int]:
    """Every terminationGracePeriodSeconds set in a manifest (pod templates nest at several depths)."""
    if isinstance(node, dict):
        own = [node["terminationGracePeriodSeconds"]] if "terminationGracePeriodSeconds" in node else []
        return own + [s for value in node.values() for s in _grace_periods_s(value)]
    if isinstance(node, list):
        return [s for value in node for s in _grace_periods_s(value)]
    return []


def test_the_pod_not_ready_hold_outlasts_a_model_load_and_a_drain() -> None:
    """Unready but running is also a Triton loading its models (the startupProbe's budget) and any pod
    draining after SIGTERM: neither is a pod out of service; a pod pulling its image is not running."""
    rule = alert("AvpenetPodNotReady")
    hold_s = _seconds(rule["for"])
    docs = [d for path in sorted(BASE.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    grace_s = max([DEFAULT_GRACE_S, *_grace_periods_s(docs)])
    assert hold_s > _model_load_s(), "a scale-up's Triton pod loading its models would warn"
    assert hold_s > grace_s, f"a pod draining for {grace_s} s after SIGTERM would warn"
    assert 'phase="Running"' in rule["expr"], "a pod pulling its image (Pending) for minutes would warn"
    assert f"for {hold_s // 60} minutes" in rule["annotations"]["description"]
