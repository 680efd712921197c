"""Bounded glibc malloc arenas (ensemble.server.ALLOCATOR_ENV) in every shipped launch path: the local Triton
launcher (an operator's own value wins) and the Kubernetes manifests of Triton and the Ray pods. Without it
the soak's replicas and Triton core grew for as long as they served (docs/RELIABILITY.md, Soak)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ensemble.server import ALLOCATOR_ENV, stub_environment

BASE = Path(__file__).resolve().parents[2] / "k8s" / "base"


def test_triton_launcher_sets_the_arena_cap_unless_the_operator_did():
    assert all(stub_environment({})[k] == v for k, v in ALLOCATOR_ENV.items())
    assert stub_environment({"MALLOC_ARENA_MAX": "4"})["MALLOC_ARENA_MAX"] == "4"


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]["containers"]
    cluster = doc["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_manifests_set_the_arena_cap_for_triton_and_every_ray_container():
    for name in ("triton-deployment.yaml", "gateway-rayservice.yaml"):
        docs = [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
        containers = [c for d in docs if d["kind"] in ("Deployment", "RayService") for c in _containers(d)]
        assert containers, name
        for container in containers:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert all(env.get(k) == v for k, v in ALLOCATOR_ENV.items()), (name, container["name"])
