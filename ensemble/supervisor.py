"""Keeps a local Triton answering: a probe inference on each `check()`, a restart after repeated failures.

Triton's readiness does not notice a Python-backend stub hung in `execute` (the models stay "ready"); only an
inference does (ensemble.probe). `avpenet serve` calls `check()` every few seconds from its main thread, so a
wedged Triton is killed and started again on the same ports without anyone's help. In Kubernetes the Triton
pod's liveness probe plays this part (docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging

from ensemble.probe import PROBE_TIMEOUT_S, probe
from ensemble.server import TritonServer

FAILURES_TO_RESTART = 2  # failed probes in a row (one slow probe on a busy box is not a hang)
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

    def check(self) -> bool:
        """One probe; restarts Triton when it is the last straw. True when the probe answered in time.

        Call it from a thread that outlives the server (Triton dies with the thread that started it).
        """
        try:
            if self.server.pid is None:
                raise RuntimeError("Triton is not running")
            probe(self.server.grpc_url, timeout_s=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 (any failure of the probe counts)
            self.failures += 1
            log.warning("Triton probe failed (%d in a row): %s", self.failures, type(exc).__name__)
            if self.failures >= self.failures_to_restart:
                self._restart()
            return False
        self.failures = 0
        return True

    def _restart(self) -> None:
        self.failures = 0
        try:
            self.server.restart(stop_timeout_s=0.0)
        except Exception as exc:  # noqa: BLE001 (the next check tries again)
            log.error("Triton restart failed: %s", exc)
            return
        self.restarts += 1
        log.warning("Triton restarted (restart %d)", self.restarts)
