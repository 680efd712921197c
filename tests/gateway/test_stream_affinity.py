"""A resume reaches the Gateway replica that holds its stream, with several Gateway replicas.

With two replicas, Serve's default routing sent a reconnect to either, and the other one started the stream
afresh (`resumed: false`: alert state and baseline lost). The Gateway now reports the streams it holds and
its router sends a WebSocket with `?stream_id=` to the holder (preprocess_service/stream/affinity.py). A
reconnect that still reaches another replica (no hint, or the holder gone: both replicas killed) restores the
stream's alert state from the checkpoint store (preprocess_service/stream/checkpoints.py).

The stack under test runs two Gateway replicas in a subprocess of its own (a process holds one Ray cluster,
the session's stack holds this one), against the session's Triton. Unit tests of the router's parts below.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from support.gateway import API_KEY
from support.serve_requests import pending, scope_pickle
from websockets.asyncio.client import connect

from preprocess_service.stream import affinity
from preprocess_service.stream.client import open_stream, ws_url
from preprocess_service.stream.metrics import RESUMES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = r"""
import asyncio, json, sys
from types import SimpleNamespace

from websockets.asyncio.client import connect

import numpy as np
import ray

from avpenet import contract
from preprocess_service.stack import LocalStack
from preprocess_service.stream.checkpoints import FLUSH_S
from preprocess_service.stream.client import open_stream, ws_url
from preprocess_service.stream.replay import Recording, send_recording
from support.stream_resumes import ONE_SECOND, hop, resume_hops

UNHINTED = 12
scaling = {"min_replicas": 2, "max_replicas": 2, "target_ongoing_requests": 8}
stack = LocalStack(
    triton=SimpleNamespace(grpc_url=sys.argv[1]), api_keys=["k", "k2"], grpc_port=None, max_replicas=2,
    deployments={"Gateway": {"autoscaling_config": scaling}},
).start()
url = ws_url(stack.http_url)


async def plain_resume(start):
    # What a client without the hint sends (the URL has no stream_id): Serve's default choice of replica.
    for _ in range(50):
        async with connect(url, additional_headers={"Authorization": "Bearer k"}, proxy=None) as conn:
            await conn.send(json.dumps(start))
            started = json.loads(await conn.recv())
        if started.get("code") != "stream_id_busy":
            return {k: started.get(k) for k in ("resumed", "restored", "alerting")}
        await asyncio.sleep(0.2)


async def alerted(sid, drop=True):
    # One window of audio with a threshold every score passes: one window, one alert; then the link drops
    # (drop), or stays open while its replica dies.
    rec = Recording(wave=np.zeros(int(contract.WINDOW_SECONDS * contract.SAMPLE_RATE), np.float32))
    start = rec.start("adult", stream_id=sid, config={"threshold": 0, "windows": 1})
    stream = await open_stream(url, "k", start)
    reader = asyncio.create_task(stream.receive_all())
    await send_recording(stream, rec, speed=0, end=False)
    for _ in range(300):
        if any(e["type"] == "alert" for e in stream.events):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2 * FLUSH_S)  # its checkpoint sent, as a replica that crashed now would have
    if drop:
        await stream.conn.close()
        await reader
    return {**start, "last_event": stream.last_event}, [e["type"] for e in stream.events]


async def after_a_crash(resume):
    # Both Gateway replicas die (as in a node loss), the stream still open on one; Serve starts new ones,
    # which hold no stream at all.
    gateways = [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Gateway#" in a["name"]]
    for actor in gateways:
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
    for _ in range(240):
        try:
            return len(gateways), await plain_resume(resume)
        except Exception:  # the new replicas are not serving yet
            await asyncio.sleep(0.5)


async def main():
    hinted = await resume_hops(url, "k", "bed-12-affinity", 6)
    # another ward (API key) with the same id: its own stream, wherever the first one is held
    other_key = await resume_hops(url, "k2", "bed-12-affinity", 2)
    first_key = await resume_hops(url, "k", "bed-12-affinity", 1)  # reopened, then resumed: 8 s
    await hop(await open_stream(url, "k", ONE_SECOND.start("adult", stream_id="bed-14-no-hint")))
    plain = ONE_SECOND.start("adult", stream_id="bed-14-no-hint")
    unhinted = [(await plain_resume(plain))["resumed"] for _ in range(UNHINTED)]
    # The replica that does not hold the stream restores its alert state from the stream's checkpoint.
    resume, events = await alerted("bed-19-checkpoint")
    restored = [await plain_resume(resume) for _ in range(UNHINTED)]
    resume, _ = await alerted("bed-20-crash", drop=False)  # open: its replica never sees it end
    killed, crash = await after_a_crash(resume)
    return {"hinted": hinted, "other_key": other_key, "first_key": first_key, "unhinted": unhinted,
            "alerted": events, "restored": restored, "killed": killed, "after_crash": crash}


try:
    print("RESULT " + json.dumps(asyncio.run(main())), flush=True)
finally:
    stack.stop()
"""


@pytest.mark.integration
def test_resumes_reach_the_replica_holding_the_stream(triton_server) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}  # support/ too
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, triton_server.grpc_url],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]  # Ray writes there too
    result = json.loads(line.removeprefix("RESULT "))
    hinted = result["hinted"]
    assert [h["resumed"] for h in hinted] == [True] * 6, hinted
    # each resume found the seconds sent before it: one state, carried across six reconnects
    assert [h["media_s"] for h in hinted] == [float(i) for i in range(1, 7)], hinted
    # the same id under a second API key is a second stream, and neither disturbs the other's (before: the
    # router sent the second key's stream to the first one's replica, which refused it 4400)
    assert result["other_key"] == [{"resumed": True, "media_s": 1.0}, {"resumed": True, "media_s": 2.0}], (
        result
    )
    assert result["first_key"] == [{"resumed": True, "media_s": 8.0}], result
    # without the hint a resume lands on either replica: two replicas really served, so the above is routing
    assert False in result["unhinted"], result["unhinted"]
    # a stream that alerted keeps its alert on whichever replica its reconnect reaches: the holder resumes
    # it, the other restores it from the checkpoint (before: `alerting` false there, the alert forgotten)
    assert "alert" in result["alerted"], result["alerted"]
    restored = result["restored"]
    assert all(r["alerting"] for r in restored), restored
    assert {"resumed": False, "restored": True, "alerting": True} in restored, restored
    # after both replicas died, the new one restored it from the checkpoint store
    assert result["killed"] == 2, result
    assert result["after_crash"] == {"resumed": False, "restored": True, "alerting": True}, result


def test_a_url_hint_other_than_the_start_id_is_refused_with_the_reason(gateway_stack) -> None:
    async def scenario() -> tuple[dict, int | None]:
        url = ws_url(gateway_stack.http_url) + "?stream_id=bed-15-other"
        async with connect(url, additional_headers={"Authorization": f"Bearer {API_KEY}"}, proxy=None) as ws:
            start = {"type": "start", "mode": "audio", "age_group": "adult", "stream_id": "bed-15-mine"}
            await ws.send(json.dumps(start))
            first = json.loads(await ws.recv())
            await ws.wait_closed()
            return first, ws.close_code

    first, code = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert first["code"] == "bad_start" and "stream_id" in first["detail"], first
    assert code == 4400


def _resumes(http_url: str) -> dict[str, float]:
    text = requests.get(f"{http_url}/metrics", timeout=5).text
    return {m[0]: float(m[1]) for m in re.findall(rf'^{RESUMES}_total{{result="(\w+)"}} (\S+)$', text, re.M)}


def test_reconnects_are_counted_by_whether_they_found_their_state(gateway_stack) -> None:
    url, before = ws_url(gateway_stack.http_url), _resumes(gateway_stack.http_url)
    busy = []

    async def scenario() -> None:
        start = {"type": "start", "mode": "audio", "age_group": "adult", "stream_id": "bed-16-counted"}
        await (await open_stream(url, API_KEY, start)).conn.close()  # a first open: not a reconnect
        for sid in ("bed-16-counted", "bed-17-unknown"):  # held here / never opened (expired, elsewhere)
            for _ in range(50):
                try:
                    stream = await open_stream(url, API_KEY, {**start, "stream_id": sid, "last_event": 0})
                    break
                except ConnectionError as exc:  # the first connection not yet seen closed
                    assert "stream_id_busy" in str(exc), exc
                    busy.append(sid)  # a reconnect refused: counted as such
                    await asyncio.sleep(0.2)
            await stream.control(type="end")
            await stream.conn.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    after = _resumes(gateway_stack.http_url)
    assert {k: after[k] - before.get(k, 0.0) for k in after} == {
        "resumed": 1.0,
        "restored": 0.0,
        "afresh": 1.0,
        "refused": float(len(busy)),
    }


def test_the_hint_is_read_from_a_stream_websocket_only() -> None:
    key = affinity.routing_key("bed-12-affinity", affinity.caller(None))  # no Authorization: key id "none"
    assert affinity.stream_hint(pending(scope_pickle("/v1/stream", b"stream_id=bed-12-affinity"))) == key
    assert affinity.stream_hint(pending(scope_pickle("/v1/stream", b"x=1"))) is None
    upload = scope_pickle("/v1/score", b"stream_id=bed-12-affinity", "http")
    assert affinity.stream_hint(pending(upload)) is None
    assert affinity.stream_hint(pending(b"stream_id=not a pickle")) is None
    assert affinity.stream_hint(pending("not bytes")) is None
    hinted = scope_pickle("/v1/stream", b"stream_id=bed-12-affinity")
    assert affinity.stream_hint(pending(hinted, http=False)) is None  # gRPC: its media is never scanned
    assert affinity.stream_hint(None) is None


def test_replicas_report_hashes_and_the_holder_is_found() -> None:
    stats = affinity.routing_stats({("bed-12-affinity", "key-1"): 100.0, ("bed-14-no-hint", "key-1"): 90.0})
    assert "bed-12-affinity" not in json.dumps(stats)  # a client-chosen id is not passed around as is
    holder = SimpleNamespace(routing_stats=stats)
    other = SimpleNamespace(routing_stats={})
    starting = SimpleNamespace(routing_stats=None)
    key = affinity.routing_key("bed-12-affinity", "key-1")
    assert affinity.holder([other, holder, starting], key) is holder
    assert affinity.holder([other, starting], key) is None
    # a second copy (a resume once started afresh elsewhere): the copy attached last keeps the resumes
    newer = SimpleNamespace(routing_stats=affinity.routing_stats({("bed-12-affinity", "key-1"): 150.0}))
    assert affinity.holder([holder, newer, other], key) is newer
    assert affinity.holder([newer, holder], key) is newer


def test_the_router_ranks_the_holder_first_and_draws_two_otherwise() -> None:
    replicas = [SimpleNamespace(replica_id=i, routing_stats={}) for i in range(4)]
    replicas[2].routing_stats = affinity.routing_stats({("bed-12-affinity", affinity.caller(None)): 100.0})
    router = affinity.StreamAffinityRouter.__new__(affinity.StreamAffinityRouter)
    router.apply_locality_routing = lambda pending: {0, 1, 2, 3}  # every replica equally near
    resume = pending(scope_pickle("/v1/stream", b"stream_id=bed-12-affinity"))
    ranks = asyncio.run(router.choose_replicas(replicas, resume))
    assert ranks[0] == [replicas[2]] and len(ranks[1]) == 2 and replicas[2] not in ranks[1]
    ranks = asyncio.run(router.choose_replicas(replicas, pending(scope_pickle("/v1/stream", b""))))
    assert len(ranks) == 1 and len(ranks[0]) == 2


def test_the_deployed_config_and_the_gateways_default_name_the_same_router() -> None:
    """serve_config.yaml (what KubeRay and every local stack deploy) and the deployment's decorator default
    (an app built in code) route resumes alike; the tests' stats wait reads the decorator's period."""
    from preprocess_service import serve_config
    from preprocess_service.deployments import Gateway

    (app,) = serve_config.load_config()["applications"]
    (gateway,) = [d for d in app["deployments"] if d["name"] == serve_config.GATEWAY]
    assert gateway["request_router_config"] == affinity.ROUTER_CONFIG
    deployed = Gateway._deployment_config.request_router_config
    assert deployed.request_router_class == affinity.ROUTER_CONFIG["request_router_class"]
    assert deployed.request_routing_stats_period_s == affinity.ROUTER_CONFIG["request_routing_stats_period_s"]
