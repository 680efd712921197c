"""Async gRPC client for the Triton ensemble: one channel over every Triton pod, deadlines, retries.

The channel's target may name many servers: `dns:///triton-headless.ns.svc:8001` (a headless Service: one
address per pod) or `ipv4:10.0.0.1:8001,10.0.0.2:8001`. With the `round_robin` policy gRPC keeps a
subchannel per address and spreads calls over the ready ones, so pods the HPA adds take load (a ClusterIP
would pin a replica's one connection to one pod). gRPC re-resolves DNS only when a connection drops, so the
channel is remade every `refresh_s` to pick up new pods; the old one closes after its calls' deadline.

Every request's windows go to Triton in one call (so the dynamic batcher sees them together); only a clip
longer than `contract.MAX_BATCH_SIZE` windows is split, and its chunks run concurrently. A retry happens only
on UNAVAILABLE (Triton restarting, connection refused), with exponential backoff, and never past the
deadline. No inference is cancelled (Triton 2.51 may crash: ensemble/client.py, CANCEL_BACKSTOP_S): at the
deadline, or when the caller goes away, the gateway stops waiting; the call runs on to Triton's answer, and
until then it still counts against the replica's request slots (`abandoned`), because the parts have no
queue timeout that would drop it (ensemble/configs.py says why).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from avpenet import contract
from avpenet.features import windows
from ensemble.client import backstop_s, channel_args, infer_inputs
from preprocess_service.errors import GatewayError, Overloaded, TritonTimeout, TritonUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class InferOutput:
    outputs: dict[str, np.ndarray]  # contract output name -> [N, ...] one row per window
    model_version: str  # version of the ensemble that answered


def served_outputs(result) -> dict[str, np.ndarray]:
    """The contract's outputs in a Triton answer: every required one (a missing one is an error, as a
    failed inference), and the optional ones the answering version has (a rolled-back fusion has none)."""
    outputs = {spec.name: result.as_numpy(spec.name) for spec in contract.ENSEMBLE.outputs}
    missing = [spec.name for spec in contract.REQUIRED_OUTPUTS if outputs[spec.name] is None]
    if missing:
        log.error("triton answered without %s", ", ".join(missing))
        raise GatewayError(f"inference failed (the model answered without {', '.join(missing)})")
    # A NaN score reads as "high" (contract.level_of) and as invalid JSON: a broken version fails, not serves
    broken = [
        n for n, v in outputs.items() if v is not None and v.dtype.kind == "f" and not np.isfinite(v).all()
    ]
    if broken:
        log.error("triton answered non-finite %s", ", ".join(broken))
        raise GatewayError(f"inference failed (the model answered non-finite {', '.join(broken)})")
    return {name: value for name, value in outputs.items() if value is not None}


def _code(exc: InferenceServerException) -> str:
    """'UNAVAILABLE' from tritonclient's status strings such as 'StatusCode.UNAVAILABLE'."""
    return str(exc.status() or "").rsplit(".", 1)[-1].upper()


class TritonClient:
    def __init__(
        self,
        url: str,
        *,
        model: str = contract.ENSEMBLE.name,
        timeout_s: float = contract.DEADLINE_S,
        timeout_per_window_s: float = 0.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        retry_after_s: int = 2,
        ssl: bool = False,
        root_certificates: str | None = None,
        lb_policy: str = "round_robin",
        refresh_s: float = 0.0,
    ) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.timeout_per_window_s = timeout_per_window_s
        self._longest_budget_s = timeout_s  # a retired channel stays open this long for calls in flight
        self.retries = retries
        self.backoff_s = backoff_s
        self.retry_after_s = retry_after_s
        self._ssl = (ssl, root_certificates)
        self.lb_policy = lb_policy
        self.refresh_s = refresh_s  # 0 = never remade
        self._channel_client: grpcclient.InferenceServerClient | None = None
        self._made_at = 0.0
        self._retiring: set[asyncio.Task] = set()
        self._running: set[asyncio.Task] = set()  # inference calls, awaited or not: never cancelled
        self._abandoned: set[asyncio.Task] = set()  # running scoring calls nobody waits for any more
        self.answered = 0  # inference calls Triton answered (the watchdog tells busy from hung with it)

    @property
    def _client(self) -> grpcclient.InferenceServerClient:
        # Made on first use, inside the event loop that drives it (a grpc.aio channel belongs to one loop).
        now = time.monotonic()
        if self._channel_client is not None and self.refresh_s and now - self._made_at > self.refresh_s:
            self._retire(self._channel_client)
            self._channel_client = None
        if self._channel_client is None:
            ssl, roots = self._ssl
            options = [*channel_args(), ("grpc.lb_policy_name", self.lb_policy)]
            self._channel_client = grpcclient.InferenceServerClient(
                self.url, ssl=ssl, root_certificates=roots, channel_args=options
            )
            self._made_at = now
        return self._channel_client

    def _retire(self, client: grpcclient.InferenceServerClient) -> None:
        """Close a replaced channel once the calls it carries have reached their backstop deadline."""

        async def close_later() -> None:
            await asyncio.sleep(backstop_s(self._longest_budget_s))
            await client.close()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        while self._running:  # closing the channel would cancel them; each ends by its backstop deadline
            await asyncio.wait(list(self._running))
        if self._channel_client is not None:
            await self._channel_client.close()
            self._channel_client = None

    # --- inference ----------------------------------------------------------------------------------------
    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        request_id: str = "",
        headers: Mapping[str, str] | None = None,
        model_version: str = "",
        budget_s: float | None = None,
    ) -> InferOutput:
        """The ensemble's outputs for N windows (inputs keyed by contract names, one row per window);
        `model_version` pins the ensemble version ("" = Triton's policy); `budget_s`, when shorter, replaces
        the call's deadline (what is left of the request's time budget)."""
        n = len(inputs[contract.AUDIO_PRESENT.name])
        step = contract.MAX_BATCH_SIZE
        if n <= step:
            chunks = [inputs]
        else:  # each chunk's AUDIO re-laid over its own rows (windows.split_rows)
            chunks = [windows.split_rows(inputs, i, min(i + step, n)) for i in range(0, n, step)]
        budget = self.deadline_s(n) if budget_s is None else min(self.deadline_s(n), budget_s)
        self._longest_budget_s = max(self._longest_budget_s, budget)
        results = await asyncio.gather(
            *(self._infer_once(c, request_id, headers, model_version, budget) for c in chunks)
        )
        # During a rolling update chunks may be answered by fusions with and without an optional output: only
        # what every chunk has is joined (each has the required ones: served_outputs).
        names = [name for name in results[0].outputs if all(name in r.outputs for r in results)]
        outputs = {name: np.concatenate([r.outputs[name] for r in results]) for name in names}
        return InferOutput(outputs, results[0].model_version)

    async def _infer_once(
        self,
        inputs: Mapping[str, np.ndarray],
        request_id: str,
        headers: Mapping[str, str] | None,
        model_version: str = "",
        budget_s: float | None = None,
    ) -> InferOutput:
        tensors = infer_inputs(grpcclient, contract.ENSEMBLE, inputs)
        result = await self._call(
            lambda remaining: self._client.infer(
                self.model,
                tensors,
                model_version=model_version,  # no outputs named: Triton answers every one the version has
                request_id=request_id,
                headers=dict(headers or {}),
                client_timeout=backstop_s(remaining),
            ),
            budget_s,
        )
        return InferOutput(served_outputs(result), str(result.get_response().model_version))

    def deadline_s(self, windows: int) -> float:
        """One call's deadline: the base, or `timeout_per_window_s` per window when that is longer.

        A 60-s clip is 58 windows; under load it queues behind other clips' windows, and a fixed deadline
        sized for a 3-s clip would time it out (504) while the naive peers simply let it wait."""
        return max(self.timeout_s, self.timeout_per_window_s * windows)

    async def _call(self, fn, budget_s: float | None = None):
        """Run `fn(remaining_seconds)` under the deadline, retrying UNAVAILABLE with exponential backoff."""
        budget = self.timeout_s if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TritonTimeout(f"Triton did not answer within {budget:.1f} s")
            try:
                return await self._uncancelled(fn(remaining), remaining, counted=True)
            except TimeoutError:
                raise TritonTimeout(f"Triton did not answer within {budget:.1f} s") from None
            except InferenceServerException as exc:
                code = _code(exc)
                if code == "UNAVAILABLE":
                    if attempt < self.retries and deadline - time.monotonic() > delay:
                        log.info("triton unavailable (attempt %d), retrying in %.2f s", attempt + 1, delay)
                        await asyncio.sleep(delay)
                        delay *= 2
                        continue
                    raise TritonUnavailable(
                        "inference server unavailable; retry later", self.retry_after_s
                    ) from None
                if code == "DEADLINE_EXCEEDED":
                    raise TritonTimeout(f"Triton did not answer within {budget:.1f} s") from None
                if code == "RESOURCE_EXHAUSTED":
                    raise Overloaded("inference queue full; retry shortly", self.retry_after_s) from None
                log.error("triton error %s: %s", code, exc.message())
                raise GatewayError(f"inference failed ({code or 'unknown'})") from None
        raise AssertionError("unreachable")

    async def _uncancelled(self, call: Awaitable[T], wait_s: float, *, counted: bool = False) -> T:
        """`call`'s result within `wait_s` (else TimeoutError); neither that nor our caller's cancellation
        cancels the call itself. `counted`: its answer, late or not, adds to `answered`."""
        task = asyncio.ensure_future(call)
        self._running.add(task)
        task.add_done_callback(functools.partial(self._finished, counted=counted))
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait_s)
        except (asyncio.CancelledError, TimeoutError):  # nobody waits; Triton computes it all the same
            if counted and not task.done():
                self._abandoned.add(task)
            raise

    @property
    def abandoned(self) -> int:
        """Scoring calls nobody waits for any more (their caller left, or their deadline passed) that Triton
        has not answered yet. The parts have no queue timeout (ensemble/configs.py says why), so Triton
        computes every call it was sent: admission counts these until then (limits.py), and what Triton holds
        stays within a replica's request slots. A hung Triton's calls end at their backstop deadline."""
        return len(self._abandoned)

    def _finished(self, task: asyncio.Task, *, counted: bool) -> None:
        self._running.discard(task)
        self._abandoned.discard(task)
        failed = task.cancelled() or task.exception() is not None  # retrieved: a late failure is not logged
        if counted and not failed:
            self.answered += 1

    # --- health and versions -----------------------------------------------------------------------------
    async def ready(self) -> bool:
        """True when Triton answers and the ensemble is ready to serve (what /readyz reports)."""
        try:
            return bool(
                await self._client.is_model_ready(self.model, client_timeout=min(self.timeout_s, 2.0))
            )
        except InferenceServerException:
            return False

    async def probe(self, timeout_s: float) -> None:
        """One zero window through the whole ensemble (ensemble.probe); raises unless it answers in time."""
        from ensemble import probe

        call = self._client.infer(self.model, **probe.probe_call(grpcclient, timeout_s))
        result = await self._uncancelled(call, timeout_s)
        probe.check_outputs(served_outputs(result))

    async def repository(self) -> list[dict[str, str]]:
        """Every model version Triton knows: [{name, version, state}], sorted.

        Read around every scoring call (pinning.py; concurrent calls share reads), so from the protobuf, not
        through tritonclient's as_json (protobuf -> JSON text -> dict in Python), and under the same deadline
        as the inference call it brackets: a fixed 2 s refused valid requests with 503 while a loaded
        replica's event loop lagged."""
        try:
            index = await self._client.get_model_repository_index(client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            if _code(exc) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise TritonUnavailable("inference server unavailable", self.retry_after_s) from None
            raise
        rows = [{"name": m.name, "version": str(m.version), "state": m.state} for m in index.models]
        return sorted(rows, key=lambda r: (r["name"], r["version"]))
