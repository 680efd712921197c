"""How long Triton holds a request that arrives while a part is busy, with and without a queue policy.

`python -m loadtests.queue_stall --pairs 40 --rates 10,30,60 --seconds 15` starts a real Triton on the
committed repository, then on a copy whose parts carry the queue policy they had before (a queue bound of 128,
a 32-s queue timeout, per-request timeouts allowed), and on each sends one-window ensemble calls through the
gateway's own client:
- `pairs`: two calls at the same instant, `--pairs` times, 0.2 s apart (what bedside streams do every second:
  their windows complete together);
- `rate R`: calls at Poisson arrivals of R per second for `--seconds` (EHR uploads at a steady rate).

It prints, per variant and load, the median, p99 and largest latency and how many calls took over 300 ms.
Any queue policy turns off Triton's payload prefetching, and Triton 2.51's dynamic batcher then misses the
wake-up of a request that arrives while the part's one instance is busy and its queue is empty: the request
waits for the batcher's 500 ms default sleep or the next arrival (ensemble/configs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_int, positive_number, positive_numbers

SLOW_MS = 300.0
FORMER_QUEUE_BOUND = 2 * contract.MAX_BATCH_SIZE
FORMER_QUEUE_TIMEOUT_US = int(contract.MAX_BATCH_SIZE * contract.DEADLINE_PER_WINDOW_S * 1_000_000)


def with_former_policy(repo: Path, out: Path) -> Path:
    """A copy of `repo` whose parts carry the queue policy they had until it was removed."""
    from tritonclient.grpc import model_config_pb2 as mc

    from ensemble import configs

    shutil.copytree(repo, out)
    for part in contract.PARTS:
        path = out / part.name / "config.pbtxt"
        config = configs.parse(path)
        policy = config.dynamic_batching.default_queue_policy
        policy.max_queue_size = FORMER_QUEUE_BOUND
        policy.timeout_action = mc.ModelQueuePolicy.REJECT
        policy.default_timeout_microseconds = FORMER_QUEUE_TIMEOUT_US
        policy.allow_timeout_override = True
        path.write_text(configs.render(config, "the former queue policy (loadtests/queue_stall.py)"))
    return out


async def latencies(url: str, load: str | float, args: argparse.Namespace) -> np.ndarray:
    """Milliseconds of each call of one load ("pairs" or a rate), after 5 warm-up calls."""
    from preprocess_service.triton_client import TritonClient

    client = TritonClient(url)
    window = contract.zero_inputs(contract.ENSEMBLE, 1)
    out: list[float] = []

    async def call() -> None:
        start = time.monotonic()
        await client.infer(window)
        out.append((time.monotonic() - start) * 1000.0)

    try:
        for _ in range(5):
            await call()
        out.clear()
        if load == "pairs":
            for _ in range(args.pairs):
                await asyncio.gather(call(), call())
                await asyncio.sleep(0.2)
        else:
            rng, rate, calls = np.random.default_rng(0), float(load), []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                calls.append(asyncio.ensure_future(call()))
                await asyncio.sleep(rng.exponential(1.0 / rate))
            await asyncio.gather(*calls)
    finally:
        await client.close()
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    from ensemble import DEFAULT_REPOSITORY
    from ensemble.server import TritonServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=positive_int, default=40)
    parser.add_argument(
        "--rates", type=positive_numbers, default="10,30,60", help="Poisson arrivals per second, comma list"
    )
    parser.add_argument("--seconds", type=positive_number, default=15.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="avpenet-queue-stall-"))
    variants = {
        "committed": DEFAULT_REPOSITORY,
        "former policy": with_former_policy(DEFAULT_REPOSITORY, work / "r"),
    }
    print("| repository | load | calls | p50 ms | p99 ms | max ms | over 300 ms |")
    print("|---|---|---|---|---|---|---|")
    try:
        for name, repo in variants.items():
            with TritonServer(repo=repo) as triton:
                for load in ["pairs", *args.rates]:
                    ms = asyncio.run(latencies(triton.grpc_url, load, args))
                    shown = "two at once" if load == "pairs" else f"{float(load):g}/s Poisson"
                    p50, p99 = np.percentile(ms, [50, 99])
                    print(
                        f"| {name} | {shown} | {ms.size} | {p50:.1f} | {p99:.1f} | {ms.max():.1f} "
                        f"| {int((ms > SLOW_MS).sum())} |",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
