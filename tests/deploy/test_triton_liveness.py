"""The Triton pod's liveness probe (k8s/base/triton-deployment.yaml) runs, as written, against a real Triton.

It is an exec probe: stdlib Python building one zero window from the ensemble's own metadata and sending it
through `/infer`, because `/v2/health/live` and `/ready` stay OK while a Python-backend stub hangs. Here the
exact script from the manifest runs with the system `python3` against the session Triton (only the port is
changed) and must succeed; the hung-stub case was checked by hand (exit 1 after 3.8 s, Triton still "ready";
docs/RELIABILITY.md), and the gateway-side twin is tests/reliability/test_triton_watchdog.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from avpenet import contract

pytestmark = pytest.mark.integration

MANIFEST = Path(__file__).resolve().parents[2] / "k8s" / "base" / "triton-deployment.yaml"


def liveness_script() -> tuple[str, int]:
    """(the probe's Python source, the Triton HTTP port the manifest starts Triton with)."""
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc.get("kind") == "Deployment":
            (server,) = doc["spec"]["template"]["spec"]["containers"]
            port = next(int(a.split("=", 1)[1]) for a in server["args"] if a.startswith("--http-port="))
            return server["livenessProbe"]["exec"]["command"][2], port
    raise AssertionError("no Triton Deployment in the manifest")


def test_the_manifests_liveness_probe_passes_on_a_healthy_triton(triton_server):
    script, port = liveness_script()
    assert f"127.0.0.1:{port}/" in script and "/infer" in script
    python = shutil.which("python3") or "python3"
    local = re.sub(rf"127\.0\.0\.1:{port}/", f"127.0.0.1:{triton_server.http_port}/", script)
    assert "127.0.0.1:8002/metrics" in script  # the manifest's --metrics-port
    local = local.replace("127.0.0.1:8002/", f"127.0.0.1:{triton_server.metrics_port}/")
    assert f"else {contract.audio_row_samples(1)} for d in" in script  # the audio row of one window
    done = subprocess.run([python, "-c", local], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
