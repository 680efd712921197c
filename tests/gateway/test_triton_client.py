"""The gateway's Triton client: retries on UNAVAILABLE with a shrinking deadline, then 503; no hang."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from avpenet import contract
from preprocess_service.errors import (
    TritonTimeout,
    TritonUnavailable,
    status_of,
)
from preprocess_service.triton_client import TritonClient

HANG_GUARD_S = 120.0  # far beyond any deadline these tests configure; reaching it means a hang


class TestTritonClient:
    def _unavailable(self):
        from tritonclient.utils import InferenceServerException

        return InferenceServerException("down", status="StatusCode.UNAVAILABLE")

    def test_retries_unavailable_with_backoff_then_succeeds(self):
        client = TritonClient("127.0.0.1:1", retries=3, backoff_s=0.01, timeout_s=5)
        calls = []

        async def flaky(remaining):
            calls.append(remaining)
            if len(calls) < 3:
                raise self._unavailable()
            return "ok"

        assert asyncio.run(client._call(flaky)) == "ok"
        assert len(calls) == 3 and calls[0] > calls[2]  # the deadline shrinks across attempts

    def test_gives_up_with_503_after_retries(self):
        client = TritonClient("127.0.0.1:1", retries=2, backoff_s=0.01, timeout_s=5)
        calls = []

        async def down(remaining):
            calls.append(1)
            raise self._unavailable()

        with pytest.raises(TritonUnavailable) as info:
            asyncio.run(client._call(down))
        assert len(calls) == 3 and status_of(info.value)[0] == 503 and info.value.retry_after_s >= 1

    def test_unreachable_server_fails_not_hangs(self, refused_port):
        async def go():
            client = TritonClient(f"127.0.0.1:{refused_port}", retries=2, backoff_s=0.05, timeout_s=3)
            try:
                await client.infer(contract.zero_inputs(contract.ENSEMBLE, 1))
            finally:
                await client.close()

        # A hang guard, not a speed check: the deadline's arithmetic is tested above without a clock.
        with pytest.raises((TritonUnavailable, TritonTimeout)):
            asyncio.run(asyncio.wait_for(go(), HANG_GUARD_S))

    def test_long_clips_get_a_deadline_per_window(self):
        client = TritonClient("127.0.0.1:1", timeout_s=10, timeout_per_window_s=0.5)
        assert client.deadline_s(1) == 10 and client.deadline_s(20) == 10  # short clips: the base
        assert client.deadline_s(58) == 29  # a 60-s clip may queue behind others' windows
        seen = []

        async def first_budget(remaining):
            seen.append(remaining)
            return "ok"

        asyncio.run(client._call(first_budget, client.deadline_s(58)))
        assert 10 < seen[0] <= 29

    def test_each_call_carries_its_remaining_deadline_as_tritons_queue_timeout(self):
        """Triton's per-request `timeout` (µs) is what is left of the gateway's deadline, so a call leaves
        the parts' queues when its caller gives up, and a 60-s clip may wait there for its whole 29 s."""
        client = TritonClient("127.0.0.1:1", timeout_s=10, timeout_per_window_s=0.5)
        sent: list[dict] = []

        class Result:
            def as_numpy(self, name):
                spec = next(s for s in contract.ENSEMBLE.outputs if s.name == name)
                return np.zeros((58, *spec.shape), spec.numpy_dtype)

            def get_response(self):
                return type("Response", (), {"model_version": "1"})()

        class Channel:
            async def infer(self, model, inputs, **kwargs):
                sent.append(kwargs)
                return Result()

        client._channel_client = Channel()
        client._made_at = float("inf")  # never remade during the test
        rows = contract.zero_inputs(contract.ENSEMBLE, 58)
        asyncio.run(client.infer(rows))
        assert client.answered == 1  # the watchdog's evidence that Triton is busy, not hung
        (kwargs,) = sent
        assert 10 < kwargs["client_timeout"] <= 29
        assert kwargs["timeout"] == int(kwargs["client_timeout"] * 1_000_000)

    def test_a_queue_timeout_rejection_is_a_504_and_not_retried(self):
        from tritonclient.utils import InferenceServerException

        client = TritonClient("127.0.0.1:1", retries=3, backoff_s=0.01, timeout_s=5)
        calls = []

        async def expired(remaining):
            calls.append(remaining)
            raise InferenceServerException(
                "in ensemble 'avpenet', Request timeout expired", status="StatusCode.UNAVAILABLE"
            )

        with pytest.raises(TritonTimeout) as info:
            asyncio.run(client._call(expired))
        assert len(calls) == 1 and status_of(info.value)[0] == 504

    def test_the_parts_queue_timeout_covers_the_gateways_longest_call(self):
        """With default settings no call's deadline outlasts the queue timeout Triton's parts allow."""
        from ensemble import configs
        from preprocess_service.settings import GatewaySettings

        settings = GatewaySettings()
        client = TritonClient(
            settings.triton_url,
            timeout_s=settings.triton_timeout_s,
            timeout_per_window_s=settings.triton_timeout_per_window_s,
        )
        assert client.deadline_s(contract.MAX_BATCH_SIZE) * 1_000_000 <= configs.QUEUE_TIMEOUT_US
