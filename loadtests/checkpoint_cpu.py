"""The Gateway CPU that writing streams' alert checkpoints costs (preprocess_service/stream/checkpoints.py).

`python -m loadtests.checkpoint_cpu --streams 40 --seconds 10` starts a local Ray node and the checkpoint
store actor, then plays a replica's event loop: every stream checkpoints once a second (one window each), as
sessions do after each scored window. Three ways, alternated twice: no store (the loop and
`Entry.checkpoint()` alone), one actor call per checkpoint, and the batched writes that are served (each
stream's latest, one call per FLUSH_S). It prints the caller's CPU for each and the cost per checkpoint over
the first.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from avpenet import contract
from avpenet.argtypes import positive_int
from preprocess_service.stream import checkpoints
from preprocess_service.stream.alerts import Window
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import Start, StreamConfig
from preprocess_service.stream.registry import StreamRegistry

WAYS = ("none", "per call", "batched")


def _entry():
    """A landmark stream 90 windows in, 30 s of baseline behind it: a typical checkpoint."""
    start = Start(type="start", mode="landmarks", image_size=(640, 480), config=StreamConfig(baseline_s=30))
    entry, _ = StreamRegistry(StreamLimits(), 10**7).acquire(start, "bed-1-probe", "key")
    for i in range(90):
        end = i + contract.WINDOW_SECONDS
        entry.monitor.feed(Window(i, float(i), end, 5.0, 4.0, 6.0, contract.level_of(5.0), 0.5, 0.5))
    return entry


async def _run(way: str, streams: int, seconds: int) -> tuple[float, bool]:
    entry, store = _entry(), checkpoints.connect(60.0)
    if way == "none":
        store.put = lambda *_: None
    elif way == "per call":
        actor = store.actor
        store.put = lambda sid, key_id, snap: actor.put.remote(
            checkpoints.routing_key(sid, key_id), key_id, snap
        )
    await store.get("warm-up-id", "key")
    start = time.process_time()
    for _ in range(seconds):
        for i in range(streams):
            store.put(f"bed-{i}-probe", "key", entry.checkpoint())
            await asyncio.sleep(1 / streams)
    await asyncio.sleep(checkpoints.FLUSH_S + 0.2)  # the last batch goes out
    cpu = time.process_time() - start
    return cpu, (await store.get("bed-0-probe", "key")) is not None


def main(argv: list[str] | None = None) -> int:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=positive_int, default=40)
    parser.add_argument("--seconds", type=positive_int, default=10)
    args = parser.parse_args(argv)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        n = args.streams * args.seconds
        for rnd in (1, 2):
            cpu = {}
            for way in WAYS:
                cpu[way], found = asyncio.run(_run(way, args.streams, args.seconds))
                if way != "none" and not found:
                    print(f"round {rnd}: {way}: the store does not hold what was written")
                    return 1
            costs = ", ".join(f"{w} {(cpu[w] - cpu['none']) / n * 1e3:.2f} ms" for w in WAYS[1:])
            print(f"round {rnd}: {n} checkpoints, caller CPU over no store per checkpoint: {costs}")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
