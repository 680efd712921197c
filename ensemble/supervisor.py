"""Keeps a local Triton answering: a probe inference on each `check()`, a restart after repeated failures.

Triton's readiness does not notice a Python-backend stub hung in `execute` (the models stay "ready"); only an
inference does (ensemble.probe). `avpenet serve` calls `check()` every few seconds from its main thread, so a
wedged Triton is killed and started again on the same ports without anyone's help. In Kubernetes the Triton
pod's liveness probe plays this part (docs/RELIABILITY.md).

A busy Triton is not a hung one: under a burst of 60-s clips the probe's one window waits behind minutes of
queued windows. A probe that misses its deadline while Triton completed other ensemble requests (its own
metrics: `nv_inference_request_success` of the ensemble) counts as busy, not failed. A hung stub completes
none (a part's executions would not do: the steps before the hung one still execute).
"""

from __future__ import annotations

import logging

from avpenet.contract import ENSEMBLE
from ensemble.client import REQUEST_SUCCESS, read_metrics
from ensemble.probe import PROBE_TIMEOUT_S, probe
from ensemble.server import TritonServer

FAILURES_TO_RESTART = 2  # failed probes in a row (one slow probe on a busy box is not a hang)
MAX_FAILED_RESTARTS = 5  # restarts that could not start Triton, in a row: give up (`avpenet serve` exits 1)
log = logging.getLogger("avpenet.supervisor")


class TritonSupervisor:
    """Probe `server`; after FAILURES_TO_RESTART failures in a row, `server.restart()` (same ports)."""

    def __init__(
        self, server: TritonServer, *, failures: int = FAILURES_TO_RESTART, timeout_s: float = PROBE_TIMEOUT_S
    ) -> None:
        self.server = server
        self.failures_to_restart = failures
        self.timeout_s = timeout_s
        self.failures = 0
        self.restarts = 0
        self.failed_restarts = 0  # in a row; each doubles the failed probes before the next attempt
        self.busy = 0  # probes that timed out while Triton completed other requests

    def completed(self) -> float:
        """Ensemble requests Triton has completed so far (-1 when its metrics cannot be read)."""
        try:
            metrics = read_metrics(self.server.metrics_url)
        except Exception:  # noqa: BLE001 (no metrics: no evidence of progress)
            return -1.0
        return metrics.get(ENSEMBLE.name, {}).get(REQUEST_SUCCESS, 0.0)

    def check(self) -> bool:
        """One probe; restarts Triton when it is the last straw. True when the probe answered in time,
        or when Triton kept executing other requests meanwhile (busy: see the module doc).

        Call it from a thread that outlives the server (Triton dies with the thread that started it).
        """
        before = self.completed() if self.server.pid is not None else -1.0
        try:
            if self.server.pid is None:
                raise RuntimeError("Triton is not running")
            probe(self.server.grpc_url, timeout_s=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 (any failure of the probe counts, unless Triton is busy)
            if before >= 0 and self.completed() > before:
                self.busy += 1
                log.info("Triton probe not answered in %.1f s, other requests were: busy", self.timeout_s)
                return True
            self.failures += 1
            log.warning("Triton probe failed (%d in a row): %s", self.failures, type(exc).__name__)
            if self.failures >= self.failures_to_restart * 2**self.failed_restarts:  # backoff
                self._restart()
            return False
        self.failures = self.failed_restarts = 0
        return True

    @property
    def gave_up(self) -> bool:
        """Triton could not be started MAX_FAILED_RESTARTS times in a row: a supervisor (systemd, Docker)
        above `avpenet serve` should see it fail rather than a gateway answering 503 forever."""
        return self.failed_restarts >= MAX_FAILED_RESTARTS

    def _restart(self) -> None:
        self.failures = 0
        try:
            self.server.restart(stop_timeout_s=0.0)
        except Exception as exc:  # noqa: BLE001 (a later check tries again, after twice as many failures)
            self.failed_restarts += 1
            log.error("Triton restart failed (%d in a row): %s", self.failed_restarts, exc)
            return
        self.restarts += 1
        log.warning("Triton restarted (restart %d)", self.restarts)
