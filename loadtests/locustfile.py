"""Locust users for AVPENet Serve: `HttpScorer` (multipart POST /v1/score) and `GrpcScorer` (Scoring/Score).

Run by `avpenet loadtest` in its own process (locust's gevent must not meet Ray/ssl in one interpreter).
Configuration comes from the environment that command sets:
  AVPENET_LOADTEST_CLIPS  folder written by loadtests.clips.build (manifest.json + files)
  AVPENET_LOADTEST_MIX    a loadtests.clips.MIXES name (request kinds drawn by share)
  AVPENET_API_KEY         bearer token / gRPC metadata key
  AVPENET_GRPC_TARGET     host:port of the gateway's gRPC proxy
Stats are named "<protocol> <kind>" so the CSV splits latency by request shape.
"""

from __future__ import annotations

import json
import os
import random
import time
from functools import lru_cache
from pathlib import Path

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: gRPC must yield to gevent, not block the hub

import grpc  # noqa: E402
from locust import HttpUser, User, between, task  # noqa: E402

from avpenet.contract import SCORE_MAX, SCORE_MIN  # noqa: E402
from avpenet.v1 import scoring_pb2, scoring_pb2_grpc  # noqa: E402
from loadtests.clips import CONTENT_TYPES, MIXES  # noqa: E402
from preprocess_service.openapi import SCORE_ROUTE  # noqa: E402

TIMEOUT_S = 60.0


@lru_cache(maxsize=1)
def clip_set() -> dict[str, dict[str, tuple[str, bytes]]]:
    """{kind: {field: (filename, bytes)}}, read once per process (built once: locust measures the server)."""
    folder = Path(os.environ["AVPENET_LOADTEST_CLIPS"])
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        k: {f: (name, (folder / name).read_bytes()) for f, name in fields.items()}
        for k, fields in manifest.items()
    }


def draw_kind() -> str:
    mix = MIXES[os.environ.get("AVPENET_LOADTEST_MIX", "ward")]
    return random.choices(list(mix), weights=list(mix.values()))[0]


def api_key() -> str:
    return os.environ.get("AVPENET_API_KEY", "")


class HttpScorer(HttpUser):
    """A bedside device or EHR integration posting clips over HTTP."""

    wait_time = between(0.0, 0.05)

    @task
    def score(self) -> None:
        kind = draw_kind()
        files = {
            field: (name, payload, CONTENT_TYPES[Path(name).suffix])
            for field, (name, payload) in clip_set()[kind].items()
        }
        headers = {"Authorization": f"Bearer {api_key()}"} if api_key() else {}
        with self.client.post(
            SCORE_ROUTE,
            files=files,
            data={"age_group": "neonate"},
            headers=headers,
            name=f"http {kind}",
            timeout=TIMEOUT_S,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif not SCORE_MIN <= response.json()["score"] <= SCORE_MAX:
                response.failure("score outside 0-10")


class GrpcScorer(User):
    """The same traffic over gRPC (locust has no gRPC user: time the call and fire the request event)."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(os.environ["AVPENET_GRPC_TARGET"])
        self.stub = scoring_pb2_grpc.ScoringStub(self.channel)
        self.metadata = [("authorization", f"Bearer {api_key()}")] if api_key() else []

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def score(self) -> None:
        kind = draw_kind()
        request = scoring_pb2.ScoreRequest(age_group="neonate")
        for field, (name, payload) in clip_set()[kind].items():
            getattr(request, field).CopyFrom(scoring_pb2.MediaFile(data=payload, filename=name))
        start = time.perf_counter()
        exception: Exception | None = None
        size = 0
        try:
            reply = self.stub.Score(request, metadata=self.metadata, timeout=TIMEOUT_S)
            size = reply.ByteSize()
            if not SCORE_MIN <= reply.score <= SCORE_MAX:
                exception = ValueError("score outside 0-10")
        except grpc.RpcError as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"grpc {kind}",
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=size,
            exception=exception,
            context={},
        )
