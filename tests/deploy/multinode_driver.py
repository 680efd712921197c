"""Driver for test_multinode.py, run in its own interpreter (the test process may hold another Ray):
joins the two-node cluster, deploys serve_config.yaml (localised as `avpenet serve` does, 2 replicas per
deployment), and prints one JSON line: nodes, where each replica runs, the statuses of the requests, and
what six resumes of one monitoring stream found (the Gateway's request router, stream/affinity.py)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
import requests
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.config import gRPCOptions
from ray.serve.schema import ServeDeploySchema
from support.stream_resumes import resume_hops

from preprocess_service.serve_config import localize
from preprocess_service.stack import APP_NAME, load_config
from preprocess_service.stream.client import ws_url

REPLICAS = 2
REQUESTS = 12
DEPLOY_TIMEOUT_S = 240.0


def config(http_port: int, triton_url: str) -> dict:
    out = localize(
        load_config(), host="127.0.0.1", http_port=http_port, grpc_port=None, triton_url=triton_url
    )
    for app in out["applications"]:
        for dep in app["deployments"]:
            dep["autoscaling_config"].update(min_replicas=REPLICAS, max_replicas=REPLICAS)
    return out


def deploy(schema: ServeDeploySchema) -> None:
    client = serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        proxy_location=schema.proxy_location,
    )
    client.deploy_apps(schema)
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while time.monotonic() < deadline:
        app = serve.status().applications.get(APP_NAME)
        if app and app.status == "RUNNING":
            return
        time.sleep(1.0)
    raise SystemExit(f"not running after {DEPLOY_TIMEOUT_S:.0f} s: {serve.status()}")


def placement() -> dict[str, list[str]]:
    """Deployment name -> node id of each live replica (from the GCS actor table; no dashboard needed)."""
    out: dict[str, list[str]] = {}
    for actor in ray._private.state.actors().values():
        name = actor.get("ActorClassName", "")
        if actor.get("State") == "ALIVE" and name.startswith(f"ServeReplica:{APP_NAME}:"):
            out.setdefault(name.rsplit(":", 1)[1], []).append(actor["Address"]["NodeID"])
    return out


def score(url: str, key: str, files: dict) -> str:
    """'200', or the status and the reason the gateway gave."""
    reply = requests.post(
        f"{url}/v1/score",
        files=files,
        data={"age_group": "adult"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    return "200" if reply.status_code == 200 else f"{reply.status_code} {reply.text[:300]}"


def main(address: str, triton_url: str, http_port: int, key: str, clips: str) -> None:
    ray.init(address=address, configure_logging=False, log_to_driver=False)
    deploy(ServeDeploySchema.model_validate(config(http_port, triton_url)))
    media = json.loads(Path(clips).read_text())  # {"video": path, "audio": path}
    uploads = [
        {"clip": ("v.mp4", Path(media["video"]).read_bytes())},  # face tracking: the FeatureExtractor
        {"audio": ("a.wav", Path(media["audio"]).read_bytes())},
    ]
    url = f"http://127.0.0.1:{http_port}"
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda i: score(url, key, uploads[i % 2]), range(REQUESTS)))
    resumes = asyncio.run(resume_hops(ws_url(url), key, "bed-21-multinode", 6))
    nodes = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
    report = {"nodes": nodes, "placement": placement(), "statuses": statuses, "resumes": resumes}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
