"""A local stack's graceful stop answers the calls in flight before it goes.

`serve.shutdown()` alone closed Serve's proxy with its connections open: every upload in flight lost its
connection without an answer, whichever of Triton and Serve stopped first (docs/RELIABILITY.md). The stack now
deletes its app first, which drains the replicas while the proxy still relays, then stops Serve and Triton.

A process holds one Ray cluster and the session's stack holds this one, so the stack under test runs in a
subprocess of its own, against the session's Triton.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, threading, time
from types import SimpleNamespace

import requests

from loadtests import clips
from preprocess_service.stack import LocalStack

UPLOADS = 8
wav = clips.wav_bytes(60.0)  # 58 windows each: long enough to be in flight when the stop begins
stack = LocalStack(triton=SimpleNamespace(grpc_url=sys.argv[1]), api_keys=["k"], grpc_port=None).start()
answers = []

def upload():
    try:
        reply = requests.post(
            f"{stack.http_url}/v1/score", files={"audio": ("a.wav", wav)}, data={"age_group": "adult"},
            headers={"Authorization": "Bearer k"}, timeout=120,
        )
        answers.append({"status": reply.status_code, "at": time.monotonic()})
    except requests.RequestException as exc:
        answers.append({"status": type(exc).__name__, "at": time.monotonic()})

threads = [threading.Thread(target=upload) for _ in range(UPLOADS)]
for t in threads:
    t.start()
time.sleep(0.5)
stop_began = time.monotonic()
stack.stop()
for t in threads:
    t.join()
print(json.dumps({"answers": answers, "stop_began": stop_began}))
"""


@pytest.mark.integration
def test_a_graceful_stop_answers_the_uploads_in_flight(triton_server) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, triton_server.grpc_url], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    answers = result["answers"]
    assert [a["status"] for a in answers] == [200] * len(answers) == [200] * 8, answers
    # the stop really began with calls in flight (else it proves nothing): some were answered after it
    assert any(a["at"] > result["stop_began"] for a in answers), answers
