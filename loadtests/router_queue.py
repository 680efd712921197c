"""Where a call to a busy Ray Serve deployment should wait: in the caller's router, or inside the replica.

`python -m loadtests.router_queue` starts a local Serve app of two deployments: a caller (as the Gateway)
that makes `--calls` calls, `--concurrency` at a time, each carrying `--payload-kb` of bytes (as a clip), to
a worker (as the FeatureExtractor) that serves `--slots` calls at once for `--work-ms` each. Two workers are
compared, in alternating rounds:

- `router`: the worker's max_ongoing_requests is `--slots`, so the calls beyond it wait in the caller's Serve
  router, which keeps trying to send them (a send, a rejection, a queue-length probe) until a slot frees;
- `replica`: max_ongoing_requests is far above `--slots` and the worker admits `--slots` at a time with an
  asyncio semaphore, so the calls wait inside it (what `FeatureExtractor` does: `limits.features_threads`).

It prints the caller process's CPU per call and the wall time against the ideal (calls x work / slots): the
caller's CPU is what waiting costs the Gateway, and the wall time above the ideal is the worker left idle
between a call finishing and the next one arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from avpenet.argtypes import count, non_negative_number, positive_int

MAX_ONGOING_INSIDE = 64


def build(slots: int, work_s: float, inside: bool):
    """The Serve app: Caller -> Worker, the worker queuing in the router (inside=False) or in itself."""
    from ray import serve

    @serve.deployment(name="Worker", max_ongoing_requests=MAX_ONGOING_INSIDE if inside else slots)
    class Worker:
        def __init__(self) -> None:
            self.slots = asyncio.Semaphore(slots if inside else MAX_ONGOING_INSIDE)

        async def work(self, payload: bytes) -> int:
            async with self.slots:
                await asyncio.sleep(work_s)
            return len(payload)

    @serve.deployment(name="Caller", max_ongoing_requests=8)
    class Caller:
        def __init__(self, worker) -> None:
            self.worker = worker

        async def run(self, calls: int, concurrency: int, payload_bytes: int) -> dict[str, float]:
            import psutil

            process, blob = psutil.Process(), os.urandom(payload_bytes)
            gate = asyncio.Semaphore(concurrency)

            async def one() -> int:
                async with gate:
                    return await self.worker.work.remote(blob)

            await one()  # routes and connections warm
            before, start = process.cpu_times(), time.perf_counter()
            sizes = await asyncio.gather(*(one() for _ in range(calls)))
            wall_s, after = time.perf_counter() - start, process.cpu_times()
            if any(size != payload_bytes for size in sizes):
                raise RuntimeError("a call returned the wrong payload size")
            cpu_s = (after.user + after.system) - (before.user + before.system)
            return {"cpu_ms_per_call": 1e3 * cpu_s / calls, "wall_s": wall_s}

    return Caller.bind(Worker.bind())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=positive_int, default=40)
    parser.add_argument("--concurrency", type=positive_int, default=16)
    parser.add_argument("--slots", type=positive_int, default=1)
    parser.add_argument("--work-ms", type=non_negative_number, default=200.0)
    parser.add_argument("--payload-kb", type=count, default=300)
    parser.add_argument("--rounds", type=positive_int, default=2)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from preprocess_service.ray_node import RayNode

    ideal_s = args.calls * args.work_ms / 1e3 / args.slots
    node = RayNode(num_cpus=2)  # a private temp dir, removed after; objects spilled to RAM
    try:
        node.start(ray)  # inside: a failed start still removes the folders it made
        print(
            f"{args.calls} calls, {args.concurrency} at a time, to {args.slots} slot(s) of "
            f"{args.work_ms:.0f} ms (ideal {ideal_s:.1f} s), {args.payload_kb} KB each",
            flush=True,
        )
        for round_no in range(args.rounds):
            for where in ("router", "replica"):
                app = build(args.slots, args.work_ms / 1e3, inside=where == "replica")
                handle = serve.run(app, name=f"rq-{where}", route_prefix=None)
                r = handle.run.remote(args.calls, args.concurrency, args.payload_kb * 1024).result()
                serve.delete(f"rq-{where}")
                print(
                    f"round {round_no + 1}  waiting in the {where:<7}  caller CPU "
                    f"{r['cpu_ms_per_call']:5.1f} ms per call  wall {r['wall_s']:5.2f} s "
                    f"({r['wall_s'] / ideal_s:.2f}x ideal)",
                    flush=True,
                )
    finally:
        try:
            if ray.is_initialized():  # serve.shutdown() would start a Ray node of its own to shut down
                serve.shutdown()
        finally:
            ray.shutdown()
            node.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
