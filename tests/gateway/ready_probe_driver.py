"""Driver for test_ready_after_warmup.py, run in a fresh interpreter like a fresh gateway replica: nothing of
the feature stack imported yet. Polls readiness (what /readyz reports), times the first request after it and
STEADY more, and prints one JSON line. Args: triton_url wav_path npz_path steady [cold]; with `cold` the
warm-up clip is skipped (readiness = Triton ready + watchdog), which shows what the warm-up saves."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

READY_GUARD_S = 120.0  # hang guard while waiting for readiness


async def _no_warm_up() -> None:
    """Stands in for ScoringService._warm_up in the `cold` control run."""


async def measure(url: str, wav: bytes, npz: bytes, steady: int, cold: bool = False) -> dict:
    service = ScoringService(GatewaySettings.load({"triton_url": url, "grpc_enabled": False}, {}))
    if cold:
        service._warm_up = _no_warm_up  # the control: readiness without the warm-up clip
    try:
        deadline = time.monotonic() + READY_GUARD_S
        while not await service.ready():
            if time.monotonic() > deadline:
                raise SystemExit("never ready")
            await asyncio.sleep(0.05)
        samples, imported = [], []
        for _ in range(steady + 1):
            before = set(sys.modules)
            request = ScoreRequest(
                audio=MediaPart(data=wav), landmarks=MediaPart(data=npz), age_group="adult"
            )
            start = time.perf_counter()
            await service.score(request, protocol="http")
            samples.append(time.perf_counter() - start)
            imported.append(sorted(set(sys.modules) - before))
        return {"first": samples[0], "steady": samples[1:], "first_imports": imported[0]}
    finally:
        await service.close()


if __name__ == "__main__":
    url, wav, npz, steady = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    cold = sys.argv[5:] == ["cold"]
    print(json.dumps(asyncio.run(measure(url, wav.read_bytes(), npz.read_bytes(), steady, cold))), flush=True)
