"""The RayService's cluster variant of the Serve config (k8s/templates/serve-cluster-overrides.yaml applied to
preprocess_service/serve_config.yaml by k8s/generate.py) fits the worker pods it will run on.

Arithmetic on the rendered manifests, as KubeRay and Ray's autoscaler read them (a pod's Ray CPUs: its
group's resources CPU, else rayStartParams num-cpus, else the container's CPU limit, else its request); no
cluster runs here, so whether the autoscaler really grows the group that far is not shown by these tests.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import k8s_scripts

from preprocess_service import serve_config
from preprocess_service.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "gpu-operator")


render = k8s_scripts.load("render")
generate = k8s_scripts.load("generate")


@pytest.fixture(scope="module", params=OVERLAYS)
def rayservice(request) -> dict[str, Any]:
    """The RayService as each overlay ships it (an overlay patching the worker pods would show here)."""
    (rs,) = [d for d in render.render(K8S / "overlays" / request.param) if d["kind"] == "RayService"]
    return rs


def _config(rs: dict) -> dict[str, Any]:
    return yaml.safe_load(rs["spec"]["serveConfigV2"])


def _deployments(config: dict) -> dict[str, dict]:
    return {d["name"]: d for app in config["applications"] for d in app["deployments"]}


def _group(rs: dict) -> dict:
    (group,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return group


def _pod_cpus(group: dict) -> int:
    """A worker pod's Ray CPUs, read here independently of k8s/generate.py."""
    params = group.get("rayStartParams", {})
    resources = group["template"]["spec"]["containers"][0]["resources"]
    quantity = (
        (group.get("resources") or {}).get("CPU")
        or params.get("num-cpus")
        or resources.get("limits", {}).get("cpu")
        or resources["requests"]["cpu"]
    )
    text = str(quantity)
    return math.ceil(float(text[:-1]) / 1000 if text.endswith("m") else float(text))


def _leaves(node: Any, path: tuple = ()) -> dict[tuple, Any]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _leaves(value, (*path, key)).items()}
    if isinstance(node, list) and node and all(isinstance(i, dict) and "name" in i for i in node):
        return {k: v for i in node for k, v in _leaves(i, (*path, i["name"])).items() if k[-1] != "name"}
    return {path: node}


def test_serve_config_v2_validates_with_ray_serve_and_its_own_timeout_check(rayservice) -> None:
    from ray.serve.schema import ServeDeploySchema

    config = _config(rayservice)
    schema = ServeDeploySchema.model_validate(config)
    serve_config.check_timeouts(config)
    assert {d.name for app in schema.applications for d in app.deployments} == {"Gateway", "FeatureExtractor"}
    caps = [d.get("max_replicas_per_node") for d in _deployments(config).values()]
    assert all(caps), "without max_replicas_per_node Ray may stack replicas of a deployment on one pod"


def test_feature_extractor_reserves_one_cpu_per_tracking_thread(rayservice) -> None:
    config, group = _config(rayservice), _group(rayservice)
    env = {e["name"]: e["value"] for e in group["template"]["spec"]["containers"][0]["env"] if "value" in e}
    (app,) = config["applications"]
    threads = GatewaySettings.load(app["args"], environ=env).limits.features_threads
    assert _deployments(config)["FeatureExtractor"]["ray_actor_options"]["num_cpus"] == threads


def test_one_worker_pod_holds_its_share_of_each_deployment_and_no_more(rayservice) -> None:
    deployments, group = _deployments(_config(rayservice)), _group(rayservice)
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0", "replicas with CPUs must land on worker pods only"
    cpus = {name: d["ray_actor_options"]["num_cpus"] for name, d in deployments.items()}
    per_pod = {name: d["max_replicas_per_node"] for name, d in deployments.items()}
    assert all(c > 0 for c in cpus.values()) and all(n >= 1 for n in per_pod.values())
    reserved = sum(cpus[name] * per_pod[name] for name in deployments)
    assert reserved <= _pod_cpus(group), "a pod cannot hold the replicas max_replicas_per_node allows"
    assert _pod_cpus(group) - reserved < cpus["FeatureExtractor"], "a FeatureExtractor's CPUs stay idle"


def test_replica_bounds_are_reachable_within_the_worker_group(rayservice) -> None:
    deployments, group = _deployments(_config(rayservice)), _group(rayservice)
    pods_min, pods_max, pod_cpus = group["minReplicas"], group["maxReplicas"], _pod_cpus(group)
    total = 0.0
    for name, d in deployments.items():
        scaling, per_pod = d["autoscaling_config"], d["max_replicas_per_node"]
        assert scaling["max_replicas"] == pods_max * per_pod, f"{name}: max_replicas is not the group's"
        assert scaling["min_replicas"] <= pods_min * per_pod, f"{name}: its floor needs more than minReplicas"
        assert scaling["min_replicas"] >= 2, f"{name}: one replica is lost with its pod (drains)"
        total += scaling["max_replicas"] * d["ray_actor_options"]["num_cpus"]
    assert total <= pods_max * pod_cpus


def test_only_the_overridden_values_differ_from_the_local_file(rayservice) -> None:
    overrides = yaml.safe_load(generate.CLUSTER_OVERRIDES.read_text())
    overridden = {
        ("applications", app, *path)
        for app, spec in overrides["applications"].items()
        for path in _leaves(spec)
    }
    local = _leaves(serve_config.load_config())
    cluster = _leaves(_config(rayservice))
    changed = {path for path in cluster.keys() | local.keys() if cluster.get(path) != local.get(path)}
    assert changed == overridden


def test_the_overrides_file_is_what_generate_applies(tmp_path: Path, monkeypatch) -> None:
    """The committed RayService is what the CLI generates from the file; an edit to the file changes it."""
    check = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert generate.RAYSERVICE.name not in check.stderr, check.stderr  # other outputs: test_k8s.py
    overrides = yaml.safe_load(generate.CLUSTER_OVERRIDES.read_text())
    overrides["applications"]["avpenet"]["deployments"]["Gateway"]["ray_actor_options"]["num_cpus"] = 0.5
    edited = tmp_path / "overrides.yaml"
    edited.write_text(yaml.safe_dump(overrides))
    monkeypatch.setattr(generate, "CLUSTER_OVERRIDES", edited)
    assert generate.RAYSERVICE in generate.stale()
    document = yaml.safe_load(generate.rayservice_text())
    gateway = _deployments(yaml.safe_load(document["spec"]["serveConfigV2"]))["Gateway"]
    assert gateway["ray_actor_options"]["num_cpus"] == 0.5


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("Gateway", "ray_actor_options", "num_cpus"), 2, "no room for a FeatureExtractor"),
        (("Gateway", "max_replicas_per_node"), "${extractors_max}", "needs numbers"),
        (("FeatureExtractor", "max_replicas_per_node"), "${nope}", "unknown"),
        (("Extractor", "max_replicas_per_node"), 1, "no single deployment"),
    ],
)
def test_generate_refuses_overrides_that_cannot_hold(tmp_path: Path, path, value, error: str) -> None:
    overrides = yaml.safe_load(generate.CLUSTER_OVERRIDES.read_text())
    node = overrides["applications"]["avpenet"]["deployments"]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    edited = tmp_path / "overrides.yaml"
    edited.write_text(yaml.safe_dump(overrides))
    with pytest.raises(ValueError, match=error):
        generate.rayservice_text(overrides=edited)


def test_ray_cpus_are_stated_and_equal_the_pods_cpu_request(rayservice) -> None:
    """num-cpus stated: a LimitRange's injected CPU limit would otherwise become Ray's CPUs and leave no room
    for a FeatureExtractor; equal to the request: the scheduler reserves what Ray hands out."""
    group = _group(rayservice)
    requested = group["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert group["rayStartParams"]["num-cpus"] == str(requested)
    env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
    assert env["OMP_NUM_THREADS"] == "1"  # not the FeatureExtractor's 4 CPUs beside its 4 tracking threads
