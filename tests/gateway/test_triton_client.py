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
                await client.infer(
                    {s.name: np.zeros((1, *s.shape), s.numpy_dtype) for s in contract.ENSEMBLE.inputs}
                )
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
