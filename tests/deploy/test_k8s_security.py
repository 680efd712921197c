"""What k8s/ exposes and to whom, checked on the rendered overlays: TLS at the ingress and to Triton, only the
scoring API routed from outside, NetworkPolicies that let only the parties that must talk reach the Ray pods
(the dashboard, which is also Ray's job-submission API, only from the KubeRay operator), only traces leaving
Triton, the API token only in the autoscaler, a PDB that keeps a gateway worker serving,
kube-prometheus-stack's labels, GPU scheduling, and comments that name files which exist. Schema validity:
tests/deploy/test_k8s.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
sys.path.insert(0, str(K8S))
import generate  # noqa: E402  (k8s/*.py are scripts, not a package)
from render import render  # noqa: E402

OVERLAYS = ("cpu", "gpu", "gpu-operator")
Doc = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request) -> list[Doc]:
    return render(K8S / "overlays" / request.param)


def _all(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in _all(docs, kind) if d["metadata"]["name"] == name]
    return found


def _rayservice(docs: list[Doc]) -> Doc:
    (rs,) = _all(docs, "RayService")
    return rs


def _ray_pods(docs: list[Doc]) -> dict[str, Doc]:
    """Pod templates of the gateway's Ray cluster: 'head' and each worker group."""
    cluster = _rayservice(docs)["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    pods |= {g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}
    return pods


def _selects(selector: dict[str, str], pod: Doc) -> bool:
    return all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items())


def _port_names(pod: Doc) -> set[str]:
    return {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}


def _serve_config() -> dict:
    return yaml.safe_load(generate.SERVE_CONFIG.read_text())


# --- from outside: the Ingress ---
def test_ingress_routes_only_the_scoring_api_over_tls(docs) -> None:
    serve = _rayservice(docs)["spec"]["serveService"]
    serve_ports = {p["name"] for p in serve["spec"]["ports"]}
    certificates = {c["spec"]["secretName"]: c for c in _all(docs, "Certificate")}
    ingresses = _all(docs, "Ingress")
    assert len(ingresses) == 2
    paths = set()
    for ingress in ingresses:
        hosts = {r["host"] for r in ingress["spec"]["rules"]}
        for tls in ingress["spec"]["tls"]:  # every host is served with a cert-manager certificate
            assert set(tls["hosts"]) == hosts
            assert set(tls["hosts"]) <= set(certificates[tls["secretName"]]["spec"]["dnsNames"])
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == serve["metadata"]["name"]
                assert path["backend"]["service"]["port"]["name"] in serve_ports
                paths.add(path["path"])
    # /docs, /openapi.json, /metrics, /healthz, /readyz and gRPC reflection stay in-cluster.
    assert paths == {"/v1", "/avpenet.v1.Scoring", "/grpc.health.v1.Health"}
    assert "dashboard" not in serve_ports, "the dashboard must never be behind the Serve service"


def test_ingress_limits_match_the_serve_config(docs) -> None:
    config = _serve_config()
    limits = config["applications"][0]["args"]["limits"]
    for ingress in _all(docs, "Ingress"):
        notes = ingress["metadata"]["annotations"]
        body = notes["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert body.endswith("m") and int(body[:-1]) * 1024 * 1024 >= limits["max_upload_bytes"]
        assert (
            int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"])
            >= (config["http_options"]["request_timeout_s"])
        )


def test_grpc_proxy_limit_matches_the_upload_limit(docs) -> None:
    """Ray's gRPC proxy refuses bigger messages unread; unset, it would accept 2 GiB."""
    from preprocess_service import grpc_wire

    limit = _serve_config()["applications"][0]["args"]["limits"]["max_upload_bytes"]
    for pod in _ray_pods(docs).values():
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[grpc_wire.MAX_MESSAGE_ENV] == str(grpc_wire.max_message_bytes(limit))


# --- gateway -> Triton ---
def test_triton_grpc_is_tls_with_a_certificate_for_the_gateways_address(docs) -> None:
    triton = _one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    (server,) = triton["containers"]
    args = dict(a.split("=", 1) for a in server["args"] if "=" in a)
    assert args["--grpc-use-ssl"] == "true"
    (tls_volume,) = [v for v in triton["volumes"] if v.get("secret", {}).get("secretName") == "triton-tls"]
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == tls_volume["name"]]
    assert (
        Path(args["--grpc-server-cert"]).parent
        == Path(args["--grpc-server-key"]).parent
        == Path(mount["mountPath"])
    )
    certificate = _one(docs, "Certificate", "triton-tls")
    assert (
        certificate["spec"]["secretName"] == "triton-tls" and "server auth" in certificate["spec"]["usages"]
    )
    issuer = _one(
        docs, "Issuer", certificate["spec"]["issuerRef"]["name"]
    )  # the CA chain is in the manifests
    ca = _one(docs, "Certificate", "avpenet-internal-ca")
    assert ca["spec"]["isCA"] and issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    for pod in _ray_pods(docs).values():
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        host = env["AVPENET_TRITON_URL"].removeprefix("dns:///").rsplit(":", 1)[0]
        assert host in certificate["spec"]["dnsNames"], "the gateway would reject Triton's certificate"
        assert env["AVPENET_TRITON_SSL"] == "true"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        (ca_volume,) = [
            n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == "triton-tls"
        ]
        items = volumes[ca_volume]["secret"]["items"]
        assert env["AVPENET_TRITON_ROOT_CERTIFICATES"] == f"{mounts[ca_volume]}/{items[0]['path']}"
        assert [i["key"] for i in items] == ["ca.crt"], "Triton's private key must not reach the gateway"


# --- NetworkPolicies ---
def _peers_by_port(policy: Doc, pod: Doc) -> dict[str, list[Doc]]:
    """Ingress peers per named port of `pod` ('*' = every port) that the policy admits."""
    out: dict[str, list[Doc]] = {}
    for rule in policy["spec"].get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])] or ["*"]
        for port in ports:
            assert port == "*" or port in _port_names(pod) or not isinstance(port, str), port
            out.setdefault(port, []).extend(rule.get("from") or [{"anyone": True}])
    return out


def test_ray_pods_admit_only_the_parties_that_must_talk(docs) -> None:
    policy = _one(docs, "NetworkPolicy", "gateway-pods")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    pods = _ray_pods(docs)
    assert all(_selects(policy["spec"]["podSelector"]["matchLabels"], p) for p in pods.values())
    peers = _peers_by_port(policy, pods["head"])
    assert not [p for ps in peers.values() for p in ps if "anyone" in p], "a rule admits everyone"
    # Any port only between the gateway's own pods (Ray's GCS, raylets, object transfer).
    assert peers["*"] == [{"podSelector": {"matchLabels": policy["spec"]["podSelector"]["matchLabels"]}}]
    names = {
        port: {p["podSelector"]["matchLabels"].get("app.kubernetes.io/name") for p in ps}
        for port, ps in peers.items()
        if port != "*"
    }
    assert names["dashboard"] == {"kuberay-operator"}, (
        "the dashboard (job submission API) is the operator's only"
    )
    assert names["serve"] == {"ingress-nginx", "kuberay-operator"}
    assert names["serve-grpc"] == {"ingress-nginx"}
    assert names["metrics"] == {"prometheus"}
    assert "client" not in _port_names(pods["head"]), "Ray Client (remote code execution) is not published"


def test_ray_pods_reach_only_triton_dns_and_each_other(docs) -> None:
    policy = _one(docs, "NetworkPolicy", "gateway-pods")
    triton = _one(docs, "Deployment", "triton")["spec"]["template"]
    to_triton = [
        r
        for r in policy["spec"]["egress"]
        if any(_selects(p.get("podSelector", {}).get("matchLabels", {"-": "-"}), triton) for p in r["to"])
    ]
    (rule,) = to_triton
    assert [p["port"] for p in rule["ports"]] == ["grpc"]
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), "an egress rule without peers opens every destination"
    head_api = _one(docs, "NetworkPolicy", "gateway-head-apiserver")
    pods = _ray_pods(docs)
    selected = [n for n, p in pods.items() if _selects(head_api["spec"]["podSelector"]["matchLabels"], p)]
    assert selected == ["head"], "only the head (autoscaler) talks to the Kubernetes API"
    deny = _one(docs, "NetworkPolicy", "default-deny")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}


COLLECTOR = {"app.kubernetes.io/name": "opentelemetry-collector"}  # the collector Helm chart's pod label
KUBE_DNS = {"k8s-app": "kube-dns"}


def _egress_peers(policy: Doc) -> list[tuple[str, dict[str, str], set[tuple[object, str]]]]:
    """(peer namespace, peer pod labels, {(port, protocol)}) for every peer of every egress rule."""
    out = []
    for rule in policy["spec"].get("egress", []):
        ports = {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}
        for peer in rule.get("to", []):
            namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            out.append((namespace.get("kubernetes.io/metadata.name", "avpenet"), labels, ports))
    return out


def test_traces_and_their_dns_are_the_only_way_out_of_triton(docs) -> None:
    """Triton's `--trace-config` exporter posts OTLP/HTTP (4318) to a collector by name: that port on the
    collector's pods and DNS on kube-dns, nothing else (no other port, no whole namespace, no IP block)."""
    policy = _one(docs, "NetworkPolicy", "triton-ingress")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for rule in policy["spec"]["egress"]:
        assert rule.get("to") and rule.get("ports"), "an egress rule without peers or ports opens too much"
    assert sorted(_egress_peers(policy), key=str) == sorted(
        [
            ("monitoring", COLLECTOR, {(4318, "TCP")}),
            ("kube-system", KUBE_DNS, {(53, "UDP"), (53, "TCP")}),
        ],
        key=str,
    )


def test_gateway_traces_reach_only_the_collector(docs) -> None:
    """The gateway's OTLP exporter (gRPC 4317 or HTTP 4318, OTEL_EXPORTER_OTLP_*) reaches the same collector
    pods as Triton's, not every pod of `monitoring`; the gateway's DNS rule serves its collector name too."""
    peers = _egress_peers(_one(docs, "NetworkPolicy", "gateway-pods"))
    otlp = [(ns, labels) for ns, labels, ports in peers if {p for p, _ in ports} & {4317, 4318}]
    assert otlp == [("monitoring", COLLECTOR)]
    (ports,) = [ports for _, labels, ports in peers if labels == COLLECTOR]
    assert ports == {(4317, "TCP"), (4318, "TCP")}
    assert ("kube-system", KUBE_DNS, {(53, "UDP"), (53, "TCP")}) in peers


def test_ray_requires_its_auth_token(docs) -> None:
    """Behind the NetworkPolicy, Ray's own token auth: the dashboard and job API refuse callers without it."""
    assert _rayservice(docs)["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}


def test_only_the_autoscaler_holds_an_api_token(docs) -> None:
    cluster = _rayservice(docs)["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    token_volumes = {
        v["name"]
        for v in head["volumes"]
        for s in v.get("projected", {}).get("sources", [])
        if "serviceAccountToken" in s
    }
    assert head["automountServiceAccountToken"] is False and token_volumes
    assert {m["name"] for m in cluster["autoscalerOptions"]["volumeMounts"]} == token_volumes
    for pod in _ray_pods(docs).values():
        for container in pod["spec"]["containers"]:
            assert not {m["name"] for m in container["volumeMounts"]} & token_volumes


# --- availability ---
def test_gateway_pdb_keeps_a_worker_serving_and_spares_the_head(docs) -> None:
    pdb = _one(docs, "PodDisruptionBudget", "avpenet-gateway")
    pods = _ray_pods(docs)
    selected = [n for n, p in pods.items() if _selects(pdb["spec"]["selector"]["matchLabels"], p)]
    assert selected == ["gateway"]
    (group,) = _rayservice(docs)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    # RayCluster-owned pods: Kubernetes honours only an integer minAvailable (maxUnavailable and percentages
    # need the owner's /scale subresource, which the RayCluster CRD lacks: the PDB then allows no eviction)
    assert "maxUnavailable" not in pdb["spec"] and isinstance(pdb["spec"]["minAvailable"], int)
    assert 1 <= pdb["spec"]["minAvailable"] < group["minReplicas"]


# --- monitoring labels ---
def test_monitoring_objects_carry_kube_prometheus_stack_labels(docs) -> None:
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        found = _all(docs, kind)
        assert found
        for doc in found:
            assert doc["metadata"]["labels"].items() >= generate.PROMETHEUS_SELECTOR.items(), kind
    dashboard = _one(docs, "ConfigMap", "avpenet-grafana-dashboard")
    assert dashboard["metadata"]["labels"].items() >= generate.GRAFANA_SIDECAR_LABEL.items()
    assert dashboard["data"][generate.DASHBOARD.name] == generate.DASHBOARD.read_text()


# --- GPU scheduling ---
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_scheduling_per_overlay(overlay: str) -> None:
    pod = _one(render(K8S / "overlays" / overlay), "Deployment", "triton")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    gpus = server["resources"].get("limits", {}).get("nvidia.com/gpu")
    tolerated = {t["key"] for t in pod.get("tolerations", [])}
    selector = pod.get("nodeSelector", {})
    if overlay == "cpu":
        assert gpus is None and not tolerated and not selector
        return
    assert gpus == server["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" in tolerated
    # The plain device plugin labels no node; GPU feature discovery (GPU operator) sets gpu.present.
    assert selector == ({"nvidia.com/gpu.present": "true"} if overlay == "gpu-operator" else {})


# --- comments name files that exist ---
PATH_IN_TEXT = re.compile(
    r"(?<![\w/.-])((?:k8s|monitoring|docs|preprocess_service|tests|ensemble|loadtests)/[\w./-]*\w)"
)


def test_paths_named_in_k8s_and_monitoring_exist() -> None:
    missing = []
    for path in [*K8S.rglob("*"), *(ROOT / "monitoring").rglob("*")]:
        if path.suffix not in (".yaml", ".yml", ".py", ".json") or "schemas" in path.parts:
            continue
        for named in PATH_IN_TEXT.findall(path.read_text()):
            target = ROOT / named.split("#")[0]
            if not target.exists():
                missing.append(f"{path.relative_to(ROOT)} -> {named}")
    assert missing == []
