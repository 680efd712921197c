"""Security as a hospital configures it: HTTPS, TLS toward Triton, API keys on both protocols, revocation.

A second stack runs in its own process (tests/reliability/corpus/secure_stack.py) with the repo's
serve_config.yaml plus TLS settings, against a second real Triton whose gRPC endpoint only speaks TLS;
certificates are made here (tests/support/pki.py). The session's stack covers missing/wrong keys
(tests/gateway/test_gateway.py); limits on bytes, duration, resolution and frames are corpus cases
(tests/reliability/test_reliability_corpus.py); non-root containers are
tests/deploy/test_k8s.py::test_every_pod_runs_non_root_without_capabilities.

Its Triton serves only this module's stack, so the module's first test also checks, on Triton's counters,
that the stack's Gateway scored its warm-up clip before it was sent anything (Gateway.check_health).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import corpus
import grpc
import pytest
import requests
from corpus.harness import GRPC_OPTIONS, grpc_call
from support.pki import self_signed

from avpenet import contract
from ensemble.client import REQUEST_SUCCESS, read_metrics
from preprocess_service.settings import Limits

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parents[1]  # tests/, for the `support` helpers
START_S = 240.0
KEY_A, KEY_B = "key-a-" + "a" * 26, "key-b-" + "b" * 26
VALID = corpus.build(Limits())[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_triton(pki):
    from ensemble import DEFAULT_REPOSITORY
    from ensemble.server import TritonServer

    certfile, keyfile = pki
    tls = ["--grpc-use-ssl=true", f"--grpc-server-cert={certfile}", f"--grpc-server-key={keyfile}"]
    with TritonServer(repo=DEFAULT_REPOSITORY, extra_args=tls) as server:
        yield server


@pytest.fixture(scope="module")
def secure_stack(pki, tls_triton, tmp_path_factory):
    folder = tmp_path_factory.mktemp("secure")
    certfile, keyfile = pki
    keys = folder / "api_keys"
    keys.write_text(f"# one key per line\n{KEY_A}\n{KEY_B}\n")
    config = folder / "stack.json"
    config.write_text(json.dumps({
        "certfile": str(certfile), "keyfile": str(keyfile), "api_keys_file": str(keys),
        "triton_grpc_url": tls_triton.grpc_url, "triton_root_certificates": str(certfile),
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    paths = [str(Path(__file__).resolve().parent), str(TESTS), env.get("PYTHONPATH", "")]  # corpus, support
    env["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    proc = subprocess.Popen(
        [sys.executable, "-m", "corpus.secure_stack", str(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=TESTS.parent, text=True,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_S)
        line = proc.stdout.readline() if ready else ""
        if not line:
            pytest.fail(f"secure stack did not start (exit {proc.poll()})")
        ports = json.loads(line)
        yield {
            "https": f"https://127.0.0.1:{ports['http_port']}",
            "grpc": f"127.0.0.1:{ports['grpc_port']}",
            "ca": str(certfile),
            "keys": keys,
        }
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def https_score(stack, key: str | None) -> requests.Response:
    body, ctype = corpus.http_request(VALID)
    headers = {"Content-Type": ctype, **({"Authorization": f"Bearer {key}"} if key else {})}
    return requests.post(
        f"{stack['https']}/v1/score", data=body, headers=headers, verify=stack["ca"], timeout=60
    )


def grpc_score(stack, key: str | None) -> str:
    with grpc.insecure_channel(stack["grpc"], options=GRPC_OPTIONS) as channel:
        return str(grpc_call(channel, corpus.grpc_message(VALID), key=key).status)


def test_the_gateway_scored_its_warm_up_clip_before_any_request(secure_stack, tls_triton):
    """Serve runs a replica's health check once before routing to it, and the Gateway's health check scores
    the warm-up clip, so a new replica's first patient request is not a cold one (it paid ~0.7 s of imports
    and first runs). Before, the clip ran only when a /readyz probe reached the replica, which Serve does not
    wait for: this Triton had answered nothing when the stack was up. Runs first: nothing was sent yet."""
    answered = read_metrics(tls_triton.metrics_url).get(contract.ENSEMBLE.name, {})
    assert answered.get(REQUEST_SUCCESS, 0.0) >= 1, answered


def test_https_scores_through_a_tls_only_triton(secure_stack, tls_triton):
    reply = https_score(secure_stack, KEY_A)
    assert reply.status_code == 200, reply.text
    assert contract.SCORE_MIN <= reply.json()["score"] <= contract.SCORE_MAX
    # Triton really refuses plaintext gRPC, so the 200 above went over TLS.
    import tritonclient.grpc as grpcclient

    plain = grpcclient.InferenceServerClient(tls_triton.grpc_url)
    with pytest.raises(Exception):  # noqa: B017 (tritonclient wraps the transport failure variously)
        plain.is_server_ready(client_timeout=3)
    plain.close()


def test_plain_http_is_not_served_on_the_https_port(secure_stack):
    plain = secure_stack["https"].replace("https://", "http://")
    try:
        reply = requests.get(f"{plain}/healthz", timeout=10)
    except requests.ConnectionError:
        return
    assert reply.status_code == 400  # uvicorn answers a plaintext request on a TLS socket with 400


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_missing_or_wrong_key_on_both_protocols(secure_stack, key):
    reply = https_score(secure_stack, key)
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert grpc_score(secure_stack, key) == "UNAUTHENTICATED"


def test_removed_key_is_revoked_without_restart(secure_stack):
    from preprocess_service.auth import RELOAD_CHECK_S

    assert https_score(secure_stack, KEY_B).status_code == 200
    assert grpc_score(secure_stack, KEY_B) == "OK"
    secure_stack["keys"].write_text(f"{KEY_A}\n")  # KEY_B removed from the mounted secret
    time.sleep(RELOAD_CHECK_S + 1.0)
    assert https_score(secure_stack, KEY_B).status_code == 401
    assert grpc_score(secure_stack, KEY_B) == "UNAUTHENTICATED"
    assert https_score(secure_stack, KEY_A).status_code == 200
    assert grpc_score(secure_stack, KEY_A) == "OK"


def test_exposed_gateway_refuses_to_start_without_keys():
    from preprocess_service.service import ScoringService
    from preprocess_service.settings import GatewaySettings

    for settings in (GatewaySettings(bind_host="0.0.0.0", grpc_enabled=False), GatewaySettings()):
        assert settings.auth_required
        with pytest.raises(ValueError, match="API keys are required"):
            ScoringService(settings)
    assert not GatewaySettings(bind_host="127.0.0.1", grpc_enabled=False).auth_required
