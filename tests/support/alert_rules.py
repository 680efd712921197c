"""Reading the alert rules the tests hold other artefacts to (the dashboard, the load test's SLOs)."""

from __future__ import annotations

import re
from pathlib import Path

from support import k8s_scripts

RULES: Path = k8s_scripts.load("generate").ALERT_RULES  # the rules k8s/generate.py puts in the PrometheusRule


def rules(path: Path = RULES) -> list[dict]:
    """Every rule of every group, recording and alerting alike."""
    import yaml

    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def alert(name: str) -> dict:
    """The alerting rule called `name`."""
    found = [r for r in rules() if r.get("alert") == name]
    assert len(found) == 1, f"{len(found)} alerting rules named {name} in {RULES.name}"
    return found[0]


def latency_thresholds_s(expr: str) -> dict[str, float]:
    """{kind: seconds} from the latency alert's `...{kind="a"} > x or ...{kind=~"b|c"} > y` terms."""
    terms = re.findall(r'\{kind=~?"([^"]+)"\}\s*>\s*([0-9.]+)', expr)
    return {kind: float(bound) for kinds, bound in terms for kind in kinds.split("|")}
