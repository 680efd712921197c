"""The gateway's Triton watchdog: a real one-window inference on a period, so readiness tells the truth.

Triton keeps saying "ready" while a Python-backend stub hangs in `execute` or a model fails every request;
only an inference notices. The watchdog sends `ensemble.probe`'s zero window every `watchdog_period_s` with a
`watchdog_timeout_s` deadline; after `watchdog_failures` failures in a row the gateway reports not ready
(`/readyz` 503, gRPC health NOT_SERVING) and refuses scoring at once with 503 / UNAVAILABLE instead of letting
every caller wait for the full Triton deadline. One good probe makes it healthy again. Who restarts Triton:
`avpenet serve` (LocalStack.supervise) locally, the Triton pod's liveness probe in Kubernetes.

A busy Triton is not a hung one. Under a burst of 60-s clips the probe's one window queues behind minutes of
windows and misses its deadline although Triton keeps answering; counting that as a failure made the
gateway refuse every request with 503 while Triton worked (440 such answers in one bench run). So a probe
that times out while real scoring calls of this replica were answered (`progress`, the Triton client's
count of answered calls) counts as busy, not failed. A hung stub or a model failing every call answers
nothing, so those are still caught within `failures` probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from preprocess_service.errors import TritonUnavailable

log = logging.getLogger("avpenet.gateway")


class TritonWatchdog:
    """Runs `probe()` on the event loop of the replica; `healthy` is False after enough failures in a row."""

    def __init__(
        self,
        probe: Callable[[float], Awaitable[None]],
        *,
        period_s: float,
        timeout_s: float,
        failures: int,
        progress: Callable[[], int] = lambda: 0,
    ) -> None:
        self.probe = probe
        self.progress = progress  # calls Triton has answered so far (TritonClient.answered)
        self.busy = 0  # probes that timed out while real calls were answered
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.failures_to_trip = failures
        self.failures = 0  # failed probes in a row
        self.probes = 0
        self.last_ok: float | None = None
        self._task: asyncio.Task | None = None

    @property
    def healthy(self) -> bool:
        return self.failures < self.failures_to_trip

    def refuse_if_hung(self, retry_after_s: int) -> None:
        """503 + Retry-After at once while Triton is found hung, not after the caller's full deadline."""
        if not self.healthy:
            raise TritonUnavailable("inference server not answering (restarting); retry later", retry_after_s)

    def ensure_started(self) -> None:
        """Start the probe loop on the running event loop (first request or health check of the replica)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="triton-watchdog")

    async def check_once(self) -> bool:
        """One probe now; updates the failure count; True when Triton answered in time."""
        self.probes += 1
        answered = self.progress()
        try:
            await asyncio.wait_for(self.probe(self.timeout_s), self.timeout_s + 1.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (every failure of the probe is a failure, unless busy)
            if self.progress() > answered:  # Triton answered real calls meanwhile: queued, not hung
                self.busy += 1
                log.info("probe inference not answered in %.1f s while Triton answered %d calls: busy",
                         self.timeout_s, self.progress() - answered)  # fmt: skip
                return True
            was_healthy = self.healthy
            self.failures += 1
            if was_healthy and not self.healthy:
                log.error("Triton failed %d probe inferences in a row (%s): not ready", self.failures,
                          type(exc).__name__)  # fmt: skip
            return False
        if not self.healthy:
            log.warning("Triton answers probe inferences again: ready")
        self.failures = 0
        self.last_ok = time.monotonic()
        return True

    async def _run(self) -> None:
        while True:
            ok = await self.check_once()
            # After a failure probe again at once: a hang is confirmed within failures * timeout seconds.
            await asyncio.sleep(self.period_s if ok else 0.2)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
