"""Gateway -> Triton gRPC over TLS exactly as k8s/ wires it: the real tritonserver started with the TLS flags
of the rendered Triton Deployment, and the gateway's Triton client built by GatewaySettings from the
environment the RayService sets. A throwaway CA stands in for cert-manager's (tmp files, never committed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from support.pki import certificate, pem

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY
from ensemble.server import HOST, TritonServer
from preprocess_service.settings import GatewaySettings
from preprocess_service.triton_client import TritonClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "k8s"))
from render import render  # noqa: E402  (k8s/render.py is a script, not a package)

pytestmark = pytest.mark.integration


def _pki(directory: Path) -> dict[str, Path]:
    """A CA, Triton's leaf for the loopback address it binds, and an unrelated CA; what the Secret holds."""
    ca_key, other_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = certificate("test-ca", ca_key, "test-ca", ca_key, ca=True)
    other = certificate("other-ca", other_key, "other-ca", other_key, ca=True)
    leaf = certificate(
        "triton",
        leaf_key,
        "test-ca",
        ca_key,
        ca=False,
        san=[x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")],
    )
    files = {"ca.crt": pem(ca), "tls.crt": pem(leaf), "tls.key": pem(leaf_key), "other.crt": pem(other)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return {name: directory / name for name in files}


def _manifest_wiring() -> tuple[list[str], dict[str, str], str, str]:
    """Triton's TLS args, the gateway's Triton env, and the directories they expect the Secret in."""
    docs = render(ROOT / "k8s" / "overlays" / "cpu")
    (triton,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton"]
    (server,) = triton["spec"]["template"]["spec"]["containers"]
    tls_args = [a for a in server["args"] if a.startswith(("--grpc-use-ssl", "--grpc-server-"))]
    (rayservice,) = [d for d in docs if d["kind"] == "RayService"]
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in head["env"] if e["name"].startswith("AVPENET_TRITON_")}
    (tls_mount,) = [m["mountPath"] for m in server["volumeMounts"] if m["name"] == "tls"]
    (ca_mount,) = [m["mountPath"] for m in head["volumeMounts"] if m["name"] == "triton-ca"]
    return tls_args, env, tls_mount, ca_mount


@pytest.fixture(scope="module")
def tls_triton(tmp_path_factory) -> tuple[TritonServer, dict[str, str], dict[str, Path]]:
    pki = _pki(tmp_path_factory.mktemp("pki"))
    tls_args, env, tls_mount, ca_mount = _manifest_wiring()
    assert "--grpc-use-ssl=true" in tls_args, "the Triton Deployment must serve gRPC over TLS"
    args = [a.replace(tls_mount, str(pki["ca.crt"].parent)) for a in tls_args]
    env = {k: v.replace(ca_mount, str(pki["ca.crt"].parent)) for k, v in env.items()}
    with TritonServer(repo=DEFAULT_REPOSITORY, extra_args=args) as server:
        env["AVPENET_TRITON_URL"] = server.grpc_url
        yield server, env, pki


def _client(settings: GatewaySettings) -> TritonClient:
    """The gateway's Triton client, with the arguments ScoringService passes it."""
    return TritonClient(
        settings.triton_url,
        model=settings.model_name,
        timeout_s=settings.triton_timeout_s,
        retries=0,
        ssl=settings.triton_ssl,
        root_certificates=settings.triton_root_certificates,
    )


def test_gateway_scores_over_tls_with_the_manifest_settings(tls_triton) -> None:
    _, env, pki = tls_triton
    settings = GatewaySettings.load({}, environ=env)
    assert settings.triton_ssl and settings.triton_root_certificates == str(pki["ca.crt"])
    zeros = contract.zero_inputs(contract.ENSEMBLE, 2)

    async def score():
        client = _client(settings)
        try:
            return await client.ready(), await client.infer(zeros)
        finally:
            await client.close()

    ready, result = asyncio.run(score())
    assert ready
    assert all(len(v) == 2 for v in result.outputs.values())


@pytest.mark.parametrize("trust", ["plaintext", "other-ca"])
def test_tls_port_refuses_plaintext_and_untrusted_clients(tls_triton, trust: str) -> None:
    server, _, pki = tls_triton
    if trust == "plaintext":
        client = grpcclient.InferenceServerClient(server.grpc_url)
    else:
        client = grpcclient.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=str(pki["other.crt"])
        )
    with pytest.raises(grpcclient.InferenceServerException):
        client.is_server_live(client_timeout=5)
    ca = str(pki["ca.crt"])
    trusted = grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=ca)
    assert trusted.is_server_live(client_timeout=5)
