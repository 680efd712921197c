"""Measure `max_queue_delay_microseconds` on the real server: `python -m ensemble.tune [--write]`.

One real tritonserver in explicit model-control mode; for each candidate delay every part is reloaded with
its CPU config carrying that delay (a config override, no restart), in interleaved rounds. Two figures per
delay: the p50 latency of lone one-window requests (what the delay costs a quiet ward) and the windows/s of
CONCURRENCY closed-loop clients (what batching buys under load), plus the average executed batch per model
from Triton's own counters. The rule picks the smallest delay whose
throughput is within TOLERANCE of the best one seen, since anything larger only adds latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from google.protobuf import json_format

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, configs, repository_lock
from ensemble.batching import PLAN_FILE, BatchingPlan, load_plan, save_plan
from ensemble.client import average_batch, infer_inputs, metrics_delta, read_metrics
from ensemble.onnx_export import valid_inputs
from ensemble.server import TritonServer

DEFAULT_DELAYS = (0, 250, 500, 1000, 2000, 4000)
CONCURRENCY = 32
TOLERANCE = 0.10  # throughput within 10% of the best counts as "as good" (the noise on a shared 2-core box)


async def closed_loop(url: str, arrays: dict[str, np.ndarray], clients: int, seconds: float) -> list[float]:
    """ms of every call `clients` workers completed in `seconds`, each sending its next once answered."""
    client = grpcaio.InferenceServerClient(url)
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            await client.infer(contract.ENSEMBLE.name, infer_inputs(grpcaio, contract.ENSEMBLE, arrays))
            latencies.append(1000.0 * (time.perf_counter() - start))

    ended = await asyncio.gather(*(worker() for _ in range(clients)), return_exceptions=True)
    await client.close()  # after every worker: closing cancels calls in flight (ensemble/client.py)
    for outcome in ended:
        if isinstance(outcome, BaseException):
            raise outcome
    return latencies


def _set_delay(client: grpcclient.InferenceServerClient, delay_us: int, base: BatchingPlan) -> None:
    """Reload every part with `delay_us` (explicit model control takes a config override, no restart)."""
    plan = BatchingPlan(
        default_delay_us=delay_us,
        preferred_batch_sizes=base.preferred_batch_sizes,
        intra_op_threads=base.intra_op_threads,
    )
    for part in contract.PARTS:
        config = configs.part_config(part, plan)
        client.load_model(
            part.name, config=json_format.MessageToJson(config, preserving_proto_field_name=True)
        )


def measure(server: TritonServer, delay_us: int, lone: int, seconds: float, concurrency: int) -> dict:
    """One round at one delay on a running explicit-mode server."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    _set_delay(client, delay_us, load_plan())
    arrays = valid_inputs(contract.ENSEMBLE, batch=1, seed=0)
    for _ in range(5):
        client.infer(contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, arrays))
    latencies = []
    for _ in range(lone):
        start = time.perf_counter()
        client.infer(contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, arrays))
        latencies.append((time.perf_counter() - start) * 1000)
    before = read_metrics(server.metrics_url)
    started = time.perf_counter()
    done = len(asyncio.run(closed_loop(server.grpc_url, arrays, concurrency, seconds)))
    elapsed = time.perf_counter() - started
    delta = metrics_delta(before, read_metrics(server.metrics_url))
    avg_batch = {part.name: average_batch(delta, part.name) for part in contract.PARTS}
    return {
        "delay_us": delay_us,
        "lone_p50_ms": statistics.median(latencies),
        "throughput_rps": done / elapsed,
        "avg_batch": avg_batch,
    }


def sweep(
    repo: Path, delays: list[int], rounds: int, lone: int, seconds: float, concurrency: int
) -> list[dict]:
    """Rounds interleave the delays (shuffled per round) so a burst of load elsewhere hits them all alike."""
    rows: dict[int, list[dict]] = {d: [] for d in delays}
    rng = random.Random(0)
    with TritonServer(repo=repo, model_control="explicit") as server:
        for round_index in range(rounds):
            order = list(delays)
            rng.shuffle(order)
            for delay in order:
                row = measure(server, delay, lone, seconds, concurrency)
                rows[delay].append(row)
                print(f"round {round_index + 1}: {row}", flush=True)
    result = []
    for delay in delays:
        runs = rows[delay]
        result.append(
            {
                "delay_us": delay,
                "rounds": len(runs),
                "lone_p50_ms": round(statistics.median(r["lone_p50_ms"] for r in runs), 2),
                "concurrency": concurrency,
                "throughput_rps": round(statistics.median(r["throughput_rps"] for r in runs), 1),
                "avg_batch": {
                    p.name: round(statistics.median(r["avg_batch"][p.name] for r in runs), 2)
                    for p in contract.PARTS
                },
            }
        )
    return result


def choose(sweep: list[dict]) -> int:
    best = max(row["throughput_rps"] for row in sweep)
    return min(row["delay_us"] for row in sweep if row["throughput_rps"] >= (1 - TOLERANCE) * best)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensemble.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument(
        "--delays", default=",".join(map(str, DEFAULT_DELAYS)), help="microseconds, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians are kept")
    parser.add_argument("--lone", type=int, default=30, help="sequential one-window requests per delay")
    parser.add_argument("--seconds", type=float, default=3.0, help="closed-loop load per delay")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--write", action="store_true", help=f"save the choice to {PLAN_FILE.name}")
    args = parser.parse_args(argv)
    delays = [int(d) for d in args.delays.split(",")]
    rows = sweep(args.repo, delays, args.rounds, args.lone, args.seconds, args.concurrency)
    for row in rows:
        print(row)
    chosen = choose(rows)
    print(f"chosen max_queue_delay_microseconds = {chosen}")
    if args.write:
        plan = load_plan()
        plan.default_delay_us = chosen
        plan.delay_us_by_model = {}
        plan.measurement = {
            "date": datetime.now(UTC).date().isoformat(),
            "host": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, shared with other work",
            "command": " ".join(["python -m ensemble.tune", *(argv if argv is not None else sys.argv[1:])]),
            "rule": (
                f"smallest delay whose {args.concurrency}-client throughput (median of {args.rounds} rounds) "
                f"is within {TOLERANCE:.0%} of the best; a larger delay only adds latency to lone requests"
            ),
            "request": "one 3 s window per request (the worst case for batching)",
            "sweep": rows,
        }
        with repository_lock.hold(args.repo):  # refused while another writer holds it: nothing written
            save_plan(plan)
            configs.write_configs(args.repo, plan)
        print(f"wrote {PLAN_FILE} and the configs of {args.repo}")
    return 0


if __name__ == "__main__":
    from avpenet.user_errors import exit_code  # a busy repository: one line and exit 2, as avpenet export

    raise SystemExit(exit_code("python -m ensemble.tune", main))
