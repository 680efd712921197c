"""Long clips queue on the real tritonserver for as long as the gateway waits for them: none is rejected.

Each call of a 60-s clip carries 58 windows; concurrent ones run one after another through each part, so the
later ones wait in a part's queue for several seconds. With a former fixed 2 s queue timeout most of them
were rejected ("Request timeout expired": 10 of 12 such calls on the 2-core dev box) although the gateway's
deadline for them is 29 s. The parts now have no queue timeout at all (ensemble/configs.py says why), and
this burst, sized to the machine, must be scored whole.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from avpenet import contract
from avpenet.features import audio
from preprocess_service.triton_client import TritonClient

pytestmark = pytest.mark.integration
SIXTY_S_WINDOWS = audio.window_count(60 * contract.SAMPLE_RATE)  # 58, as the gateway cuts them
QUEUED_WORK_S = 10.0  # aim for about this much queued work: several times the former 2 s queue timeout
MAX_CALLS = 16  # ~11 MB of waveform each


def test_concurrent_60s_clips_wait_in_the_queue_and_are_all_scored(triton_server) -> None:
    rows = contract.zero_inputs(contract.ENSEMBLE, SIXTY_S_WINDOWS)

    async def go() -> tuple[float, list]:
        client = TritonClient(
            triton_server.grpc_url, timeout_s=10, timeout_per_window_s=contract.DEADLINE_PER_WINDOW_S
        )
        try:
            started = time.monotonic()
            await client.infer(rows)  # one alone: sizes the burst to this machine's speed
            alone_s = time.monotonic() - started
            calls = min(MAX_CALLS, max(3, math.ceil(QUEUED_WORK_S / alone_s)))
            results = await asyncio.gather(
                *(client.infer(rows) for _ in range(calls)), return_exceptions=True
            )
            return alone_s, results
        finally:
            await client.close()

    alone_s, results = asyncio.run(go())
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    assert not failed, (
        f"{len(failed)} of {len(results)} calls failed (one alone took {alone_s:.2f} s): {failed[:3]}"
    )
    assert all(r.outputs[contract.SCORE.name].shape == (SIXTY_S_WINDOWS, 1) for r in results)
