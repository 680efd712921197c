"""Per-replica export of the gateway's metrics through Ray's metrics port, the port k8s scrapes pod by pod.

A replica's `/metrics` answers only through a Serve proxy, which hands each scrape to one replica, so a
scraper never sees every replica. Ray's metrics agent on each node exports what that node's replicas record
with `ray.serve.metrics`, tagged deployment/replica/application. `RayMirror` copies a prometheus-client
registry there every `period_s`: each sample becomes a Ray gauge of the same name and labels (counters and
histogram buckets as their running totals, which rate() and histogram_quantile() read as before). Ray
prefixes exported names with `ray_`; the PodMonitor (k8s/base/podmonitors.yaml) strips it and sets the job
to `avpenet-gateway`, so alert rules and the dashboard read the same names locally and in a cluster.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry

log = logging.getLogger("avpenet.metrics")
PERIOD_S = 5.0  # Ray's agent exports every few seconds; copying faster would not show sooner


class RayMirror:
    """Copies `registry` into Ray's metrics every `period_s` from a daemon thread (start() / stop())."""

    def __init__(self, registry: CollectorRegistry, period_s: float = PERIOD_S) -> None:
        self.registry = registry
        self.period_s = period_s
        self._gauges: dict[str, Any] = {}  # sample name -> ray.serve.metrics.Gauge
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-metrics-mirror", daemon=True)

    def start(self) -> RayMirror:
        self.copy_once()  # series exist from the first export on, as they do on /metrics
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def copy_once(self) -> int:
        """One copy of every sample; returns how many were set."""
        from ray.serve import metrics

        count = 0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):  # creation timestamps: noise once mirrored
                    continue
                gauge = self._gauges.get(sample.name)
                if gauge is None:
                    keys = tuple(sorted(sample.labels))
                    gauge = metrics.Gauge(sample.name, family.documentation, tag_keys=keys or None)
                    self._gauges[sample.name] = gauge
                gauge.set(sample.value, tags=dict(sample.labels))
                count += 1
        return count

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.copy_once()
            except Exception:  # noqa: BLE001 - metrics must never take a replica down
                log.exception("copying metrics to Ray's exporter failed")
