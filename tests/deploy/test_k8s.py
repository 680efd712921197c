"""Offline validation of k8s/: every overlay renders, every object validates against its upstream schema
(k8s/validate.py: kubernetes-validate strict for built-in kinds, KubeRay's CRD for the RayService, the
prometheus-operator and cert-manager models for their kinds), the gateway's serveConfigV2 is the local Serve
config but for its deployments' sizing (that: tests/deploy/test_serve_cluster.py), and names cross-refer.
Security and exposure checks: tests/deploy/test_k8s_security.py.

No API server can run in CI, so each check uses the best offline authority: those schemas, Ray Serve's own
config schema for serveConfigV2, promtool for the alert rules.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support import k8s_scripts

from ensemble import configs

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "gpu-operator")
GPU_OVERLAYS = ("gpu", "gpu-operator")
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"


render = k8s_scripts.load("render")
generate = k8s_scripts.load("generate")
validate = k8s_scripts.load("validate")
K8S_VERSION = validate.K8S_VERSION


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render.render(K8S / "overlays" / request.param)


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    """(owner, PodTemplateSpec) for the Triton Deployment and every Ray group of the RayService."""
    out = [
        (f"Deployment/{d['metadata']['name']}", d["spec"]["template"])
        for d in docs
        if d["kind"] == "Deployment"
    ]
    for rs in (d for d in docs if d["kind"] == "RayService"):
        cluster = rs["spec"]["rayClusterConfig"]
        out.append(("RayService/head", cluster["headGroupSpec"]["template"]))
        out += [(f"RayService/{g['groupName']}", g["template"]) for g in cluster["workerGroupSpecs"]]
    return out


def _ray_container_envs(docs: list[dict]) -> list[tuple[str, dict[str, str | None]]]:
    """(owner, the Ray container's environment) for every Ray group of the RayService."""
    return [
        (owner, {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]})
        for owner, template in _pod_templates(docs)
        if owner.startswith("RayService")
    ]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- rendering ---
@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl not installed: k8s/render.py alone renders"
)
@pytest.mark.parametrize("name", OVERLAYS)
def test_python_renderer_equals_kubectl_kustomize(name: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    key = lambda d: (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
    theirs = {key(d): d for d in yaml.safe_load_all(out) if d}
    ours = {key(d): d for d in render.render(K8S / "overlays" / name)}
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k] == theirs[k], f"{k} differs between k8s/render.py and kubectl kustomize"


def test_renderer_refuses_unknown_kustomize_features(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nreplicas: [{name: triton, count: 3}]\n")
    with pytest.raises(render.RenderError, match="replicas"):
        render.render(tmp_path)


def test_generated_manifests_are_fresh() -> None:
    """base/gateway-rayservice.yaml and base/prometheusrule.yaml equal what their sources generate now."""
    assert generate.stale() == [], "run: .venv/bin/python k8s/generate.py"


# --- schemas ---
def test_every_object_validates_against_its_upstream_schema(overlay) -> None:
    _, docs = overlay
    assert validate.validate_all(docs) == []
    kinds = {d["kind"] for d in docs}
    assert set(validate.CUSTOM_KINDS) - {"ClusterIssuer"} <= kinds, "a custom kind went unvalidated"
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Ingress",
        "ConfigMap",
    } <= kinds


# One misspelt field per validated custom kind: each schema must reject it (the checks have teeth).
TYPOS = {
    "RayService": ("spec", "rayClusterConfig", "workerGroupSpecs", 0, "maxReplica"),
    "ServiceMonitor": ("spec", "endpoints", 0, "prot"),
    "PodMonitor": ("spec", "podMetricsEndpoints", 0, "intervall"),
    "PrometheusRule": ("spec", "groups", 0, "rules", 0, "expresion"),
    "Certificate": ("spec", "dnsName"),
    "Issuer": ("spec", "selfSigned", "crlDistributionPoint"),
}


@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_upstream_schemas_reject_a_misspelt_field(kind: str) -> None:
    docs = render.render(K8S / "overlays" / "gpu")
    bad = yaml.safe_load(yaml.safe_dump(next(d for d in docs if d["kind"] == kind)))
    *path, field = TYPOS[kind]
    node = bad
    for key in path:
        node = node[key]
    node[field] = 1
    assert any(field in line for line in validate.errors(bad)), f"{kind}: {field} was accepted"


def test_strict_validation_catches_a_typo(overlay) -> None:
    _, docs = overlay
    bad = yaml.safe_load(yaml.safe_dump(_one(docs, "Deployment", "triton")))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {
        "httpGet": {"path": "/", "port": 8000}
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_rayservice_pod_templates_validate_as_kubernetes_pods(overlay) -> None:
    _, docs = overlay
    rs = _one(docs, "RayService")
    templates = [t for owner, t in _pod_templates(docs) if owner.startswith("RayService")]
    autoscaler = rs["spec"]["rayClusterConfig"]["autoscalerOptions"]
    templates.append(
        {
            "spec": {
                "containers": [
                    {
                        "name": "autoscaler",
                        "image": "x",
                        **{k: autoscaler[k] for k in ("securityContext", "resources")},
                    }
                ]
            }
        }
    )
    for template in templates:
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


# --- the gateway's Serve config ---
def test_serve_config_v2_is_the_local_serve_config_but_for_sizing_and_valid(overlay) -> None:
    """Proxies, app args and import path ARE the local file's; only the deployments' sizing differs."""
    _, docs = overlay
    text = _one(docs, "RayService")["spec"]["serveConfigV2"]
    embedded, local = yaml.safe_load(text), yaml.safe_load(generate.SERVE_CONFIG.read_text())
    sizing = [d for app in embedded["applications"] for d in app["deployments"]]
    assert sizing != [d for app in local["applications"] for d in app["deployments"]], "no cluster variant"
    for config in (embedded, local):
        for app in config["applications"]:
            app["deployments"] = [d["name"] for d in app["deployments"]]
    assert embedded == local
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(text))
    for app in config.applications:
        module = (
            app.import_path.rsplit(":", 1)[0] if ":" in app.import_path else app.import_path.rsplit(".", 1)[0]
        )
        assert importlib.util.find_spec(module) is not None, f"{app.import_path} is not importable"


def test_gateway_pod_environment_is_accepted_by_gateway_settings(overlay) -> None:
    _, docs = overlay
    from preprocess_service import settings as settings_module

    apps = yaml.safe_load(generate.SERVE_CONFIG.read_text())["applications"]
    for owner, template in _pod_templates(docs):
        if not owner.startswith("RayService"):
            continue
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"] if "value" in e}
        for app in apps:
            settings = settings_module.GatewaySettings.load(app.get("args") or {}, environ=env)
            # every Triton pod through the headless Service (round_robin over its addresses)
            assert settings.triton_url == "dns:///triton.avpenet.svc.cluster.local:8001"
            assert settings.triton_lb_policy == "round_robin" and settings.triton_refresh_s > 0
            assert settings.auth_required and settings.api_keys_file
            assert settings.triton_ssl and settings.triton_root_certificates, "gateway -> Triton is TLS"


def test_ray_pods_give_a_slow_proxy_start_the_local_stacks_time(overlay) -> None:
    """Serve's controller kills a proxy not ready 5 s after its creation; LocalStack gives it longer
    (ray_node.SLOW_START_ENV) because a busy node's worker start took more: every Ray pod does the same."""
    from preprocess_service import ray_node

    for owner, env in _ray_container_envs(overlay[1]):
        assert {k: env.get(k) for k in ray_node.SLOW_START_ENV} == ray_node.SLOW_START_ENV, owner


def test_ray_pods_write_worker_logs_to_the_container_log(overlay) -> None:
    """The audit lines (one per request) reach the container log, which a cluster's log agent ships, as
    `avpenet serve` sends them to its stderr; not files in the ray-tmp emptyDir, which goes with the pod."""
    from preprocess_service import ray_node

    for owner, env in _ray_container_envs(overlay[1]):
        assert {k: env.get(k) for k in ray_node.SERVICE_LOG_ENV} == ray_node.SERVICE_LOG_ENV, owner


# --- Triton and security ---
def test_triton_deployment_shape(overlay) -> None:
    name, docs = overlay
    spec = _one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    (server,) = spec["containers"]
    variant = [a.split("=", 1)[1] for a in server["args"] if a.startswith("--model-config-name=")]
    assert variant == (["gpu"] if name in GPU_OVERLAYS else [configs.POD_CONFIG_NAME])
    if name not in GPU_OVERLAYS:  # the pod configs' ONNX Runtime threads are sized to this request
        assert generate._cpus(server["resources"]["requests"]["cpu"]) == configs.POD_CPUS
    if name in GPU_OVERLAYS:
        assert server["image"] == TRITON_IMAGE
        assert (
            server["resources"]["limits"]["nvidia.com/gpu"]
            == server["resources"]["requests"]["nvidia.com/gpu"]
        )
    else:
        assert "nvidia.com/gpu" not in server["resources"].get("limits", {})
    probes = {p: server[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")}
    assert all(path.startswith("/v2/health/") for path in probes.values())
    assert probes["readinessProbe"] == "/v2/health/ready"
    # liveness is a real inference (a hung stub leaves /v2/health/* OK): tests/deploy/test_triton_liveness.py
    assert server["livenessProbe"]["exec"]["command"][:2] == ["python3", "-c"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    _leftover_regions_go_before_triton_starts(server["command"], server["args"])
    models = mounts["/models"]
    assert any(m["name"] == models for c in spec["initContainers"] for m in c["volumeMounts"])
    assert "--model-repository=/models" in server["args"]


def test_what_an_hpa_scales_carries_no_replica_count(overlay) -> None:
    """`replicas: 2` on the Triton Deployment put a busy pool of 6 back to 2 on every `kubectl apply`."""
    _, docs = overlay
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert "replicas" not in _one(docs, ref["kind"], ref["name"])["spec"], ref


def _bytes(quantity: str) -> int:
    return int(quantity[:-2]) * {"Mi": 2**20, "Gi": 2**30}[quantity[-2:]]


def test_ray_nodes_spill_objects_to_bounded_memory(overlay) -> None:
    """Uploads cross Ray's object store; what Ray spills (or allocates when it cannot spill) must land in a
    memory-backed volume, not in the ray-tmp disk volume where the spill would go by default, and one small
    enough that Ray refuses to spill more (at 95% of it) before the container reaches its memory limit."""
    _, docs = overlay
    cluster = _one(docs, "RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        spill = Path(group["rayStartParams"]["object-spilling-directory"])
        pod = group["template"]["spec"]
        (ray,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {Path(m["mountPath"]): m["name"] for m in ray["volumeMounts"]}
        holder = max((path for path in mounts if spill.is_relative_to(path)), key=lambda p: len(p.parts))
        spill_volume = volumes[mounts[holder]]["emptyDir"]
        store_volume = volumes[mounts[Path("/dev/shm")]]["emptyDir"]  # where Ray puts its store
        assert spill_volume["medium"] == store_volume["medium"] == "Memory", ray["name"]
        limit = _bytes(ray["resources"]["limits"]["memory"])
        assert _bytes(store_volume["sizeLimit"]) == limit, ray["name"]  # the store: 30% of the limit (Ray's)
        assert holder != Path("/dev/shm") and _bytes(spill_volume["sizeLimit"]) <= limit // 4, ray["name"]


def test_every_pod_runs_non_root_without_capabilities(overlay) -> None:
    _, docs = overlay
    templates = _pod_templates(docs)
    assert len(templates) >= 3
    for owner, template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, owner
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", owner
        assert pod.get("automountServiceAccountToken") is False, owner
        for container in pod.get("initContainers", []) + pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, f"{owner}/{container['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{owner}/{container['name']}"
            assert "memory" in container["resources"]["limits"], f"{owner}/{container['name']}"


def test_api_keys_come_from_a_secret(overlay) -> None:
    _, docs = overlay
    for owner, template in _pod_templates(docs):
        if owner.startswith("RayService"):
            secrets = {
                v["secret"]["secretName"]: v["secret"] for v in template["spec"]["volumes"] if "secret" in v
            }
            assert secrets.keys() == {"avpenet-api-keys", "triton-tls"}, owner
            # Of Triton's TLS secret the gateway mounts the CA certificate alone, never Triton's private key.
            assert [i["key"] for i in secrets["triton-tls"]["items"]] == ["ca.crt"], owner
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret may be committed"


# --- cross references ---
def test_services_select_pods_and_named_ports(overlay) -> None:
    """Our Services, and the RayService's serveService (KubeRay sets its selector to the serving cluster)."""
    _, docs = overlay
    templates = _pod_templates(docs)
    serve = _one(docs, "RayService")["spec"]["serveService"]
    serve = {**serve, "spec": {**serve["spec"], "selector": {"app.kubernetes.io/component": "gateway"}}}
    for svc in [d for d in docs if d["kind"] == "Service"] + [serve]:
        selected = [t for _, t in templates if _matches(svc["spec"]["selector"], t["metadata"]["labels"])]
        assert selected, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            for t in selected:
                names = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"{svc['metadata']['name']}:{port['name']}"


def test_service_monitors_find_their_services_and_set_job_names(overlay) -> None:
    _, docs = overlay
    services = [d for d in docs if d["kind"] == "Service"]
    jobs = set()
    for pm in (d for d in docs if d["kind"] == "PodMonitor"):  # pod by pod: every replica's pod is a target
        pods = [
            t
            for _, t in _pod_templates(docs)
            if _matches(pm["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])
        ]
        assert pods, f"PodMonitor {pm['metadata']['name']} selects no pod"
        for endpoint in pm["spec"]["podMetricsEndpoints"]:
            for t in pods:
                assert endpoint["port"] in {
                    p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])
                }
            relabelings = endpoint.get("relabelings", []) + endpoint.get("metricRelabelings", [])
            jobs |= {r["replacement"] for r in relabelings if r["targetLabel"] == "job"}
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        (svc,) = [
            s for s in services if _matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        ports = {p["name"] for p in svc["spec"]["ports"]}
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports
        jobs.add(svc["metadata"]["labels"][sm["spec"]["jobLabel"]])
        jobs |= {r["replacement"] for e in sm["spec"]["endpoints"] for r in e.get("relabelings", [])}
    local = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    assert jobs == {c["job_name"] for c in local["scrape_configs"]}, (
        "k8s and local job names must agree (alerts)"
    )


def test_hpa_and_pdb_target_triton(overlay) -> None:
    _, docs = overlay
    deployment = _one(docs, "Deployment", "triton")
    hpa = _one(docs, "HorizontalPodAutoscaler", "triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    pdb = _one(docs, "PodDisruptionBudget", "triton")
    assert _matches(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    assert hpa["spec"]["minReplicas"] >= 2, "a PDB with maxUnavailable 1 needs 2 pods to keep serving"
    adapter = yaml.safe_load((ROOT / "monitoring" / "prometheus-adapter" / "values.yaml").read_text())
    served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
    used = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert used and used <= served


def test_only_the_gateway_reaches_triton(overlay) -> None:
    _, docs = overlay
    policy = _one(docs, "NetworkPolicy", "triton-ingress")
    triton = _one(docs, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    assert _matches(policy["spec"]["podSelector"]["matchLabels"], triton)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]  # egress: test_k8s_security.py (traces)
    assert not [r for r in policy["spec"]["ingress"] if "http" in {p["port"] for p in r["ports"]}]
    inference_rules = [r for r in policy["spec"]["ingress"] if "grpc" in {p["port"] for p in r["ports"]}]
    (rule,) = inference_rules
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, "inference ports must not be opened to a namespace or IP block"
    allowed = [
        o
        for o, t in _pod_templates(docs)
        if _matches(peer["podSelector"]["matchLabels"], t["metadata"]["labels"])
    ]
    assert allowed and all(o.startswith("RayService") for o in allowed)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: `make setup` apt-installs prometheus"
)
def test_prometheusrule_passes_promtool(overlay, tmp_path: Path) -> None:
    _, docs = overlay
    rule = _one(docs, "PrometheusRule")
    source = yaml.safe_load(generate.ALERT_RULES.read_text())
    assert rule["spec"]["groups"] == source["groups"]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _leftover_regions_go_before_triton_starts(command: list[str], args: list[str]) -> None:
    """The dshm volume outlives a killed container: the command (run here by sh, against a stand-in
    tritonserver and a folder for /dev/shm) removes the Python backend's old regions, then execs Triton with
    every arg."""
    import os
    import shlex
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shm, bin_dir = Path(tmp, "shm"), Path(tmp, "bin")
        shm.mkdir(), bin_dir.mkdir()
        (shm / "triton_python_backend_shm_region_5e9c").write_bytes(b"old tensors")
        (shm / "kept").write_bytes(b"")
        fake = bin_dir / "tritonserver"
        fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        fake.chmod(0o755)
        shell, flag, script, *rest = command
        assert (shell, flag) == ("/bin/sh", "-c") and "/dev/shm/" in script
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        here = script.replace("/dev/shm/", f"{shlex.quote(str(shm))}/")
        ran = subprocess.run([shell, flag, here, *rest, *args], env=env, capture_output=True, text=True,
                             timeout=30, check=True)  # fmt: skip
        assert ran.stdout.splitlines() == args
        assert [p.name for p in shm.iterdir()] == ["kept"]
