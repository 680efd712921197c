"""Reading the alert rules the tests hold other artefacts to (the dashboard, the load test's SLOs)."""

from __future__ import annotations

import re


def latency_thresholds_s(expr: str) -> dict[str, float]:
    """{kind: seconds} from the latency alert's `...{kind="a"} > x or ...{kind=~"b|c"} > y` terms."""
    terms = re.findall(r'\{kind=~?"([^"]+)"\}\s*>\s*([0-9.]+)', expr)
    return {kind: float(bound) for kinds, bound in terms for kind in kinds.split("|")}
