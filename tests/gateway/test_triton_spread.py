"""The gateway's Triton client spreads load over every Triton it is given, survives one dying, and takes the
restarted one back — against two real tritonservers on loopback.

A DNS name resolving to both cannot be made on loopback (one port per name), so the channel is given both
addresses as one gRPC target (`ipv4:a,b`): the same round_robin policy and subchannel handling a headless
Service's `dns:///` target gets. Each server's own counter (`nv_inference_request_success`) says who served.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from avpenet import contract
from ensemble import probe
from ensemble.client import read_metrics
from ensemble.server import TritonServer
from preprocess_service.triton_client import TritonClient

pytestmark = pytest.mark.integration

CONCURRENCY = 8
ROUND = 24  # requests per round
MAX_ROUNDS = 40  # hang guard for "the restarted server gets traffic again" (~1000 requests)
SUCCESS = "nv_inference_request_success"


def served(server: TritonServer) -> float:
    return read_metrics(server.metrics_url).get(contract.ENSEMBLE.name, {}).get(SUCCESS, 0.0)


async def load(
    client: TritonClient, n: int, answered: asyncio.Event | None = None
) -> list[BaseException | None]:
    """`n` one-window requests, CONCURRENCY at a time; None for each success, the exception otherwise.
    `answered` is set once CONCURRENCY requests have succeeded (the load is under way, most still to come)."""
    gate = asyncio.Semaphore(CONCURRENCY)
    inputs = probe.probe_inputs()
    ok = 0

    async def one(i: int) -> BaseException | None:
        nonlocal ok
        async with gate:
            try:
                await client.infer(inputs, request_id=f"spread-{i}")
                ok += 1
                if answered is not None and ok >= CONCURRENCY:
                    answered.set()
                return None
            except Exception as exc:  # counted, not raised: the test reports every failure
                return exc

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_round_robin_over_two_tritons_survives_a_kill_and_takes_the_restart_back(triton_server):
    other = TritonServer().start()
    try:
        target = f"ipv4:{triton_server.grpc_url},{other.grpc_url}"
        asyncio.run(_scenario(triton_server, other, target))
    finally:
        other.stop()


async def _scenario(survivor: TritonServer, victim: TritonServer, target: str) -> None:
    # refresh_s short: the channel is remade several times under load, as it is every minute in production
    client = TritonClient(target, timeout_s=20.0, retries=3, backoff_s=0.1, refresh_s=2.0)
    try:
        # 1. both servers receive traffic
        a0, b0 = served(survivor), served(victim)
        assert not [e for e in await load(client, ROUND) if e]
        assert served(survivor) > a0 and served(victim) > b0, "round_robin left one server without traffic"

        # 2. one killed mid-load: every request still answered (the retry budget covers those in flight)
        a1 = served(survivor)
        under_way = asyncio.Event()
        running = asyncio.create_task(load(client, 4 * ROUND, under_way))
        await asyncio.wait(
            {running, asyncio.create_task(under_way.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        assert not running.done(), "the load ended before the kill"  # 8 of 96 answered: it cannot have
        os.killpg(victim.pid, signal.SIGKILL)
        failures = [e for e in await running if e]
        assert not failures, f"{len(failures)} failed: {failures[:3]}"
        after = [e for e in await load(client, ROUND) if e]
        assert not after, after[:3]
        assert served(survivor) - a1 >= ROUND  # the survivor took at least all requests made after the kill

        # 3. the killed server restarted on the same address: it is served again
        victim.restart()
        for _ in range(MAX_ROUNDS):
            assert not [e for e in await load(client, ROUND) if e]
            if served(victim) > 0:
                break
        assert served(victim) > 0, "the restarted server never got traffic back"
    finally:
        await client.close()
