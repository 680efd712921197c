"""The pragmatic peer the benchmark also compares against: one deployment running the ONNX parts in-process.

What an engineer who knows ONNX Runtime but skips Triton would build: a FastAPI ingress that parses the
upload, runs the same feature code (`preprocess_service.extract.extract`) and chains the four ONNX graphs
Triton serves (`ensemble.ort_chain.OrtChain`: each part's configured graph) in one process with
onnxruntime - no dynamic batching across requests, no second process, no gRPC hop. Same graphs as Triton,
so the same score; the only differences from AVPENet Serve are what Triton adds (batching, separate stubs,
the gRPC call).

Deployed as a third Serve application (route prefix `/ort`) behind the bench's shared HTTP proxy.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the class-based route.

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from loadtests.baseline import PEER_CPUS, peer_app_entry, score_upload

APP_NAME = "ort"
ROUTE_PREFIX = "/ort"
SCORE_ROUTE = "/v1/score"
IMPORT_PATH = "loadtests.ort_peer:build_app"
MAX_ONGOING = 64  # accepts the bench's highest concurrency (32) without queueing in the proxy

api = FastAPI(title="AVPENet one-process ONNX Runtime peer")


@serve.deployment(
    name="OrtScorer", ray_actor_options={"num_cpus": PEER_CPUS}, max_ongoing_requests=MAX_ONGOING
)
@serve.ingress(api)
class OrtScorer:
    """Parse, extract features, run the ONNX chain: each request alone, nothing batched across requests."""

    def __init__(self, repo: str | None = None, threads: int | None = None, track_every: int = 1) -> None:
        from ensemble.ort_chain import OrtChain
        from preprocess_service.deployments import warm_up
        from preprocess_service.settings import Limits

        self.chain = OrtChain(repo, threads)
        self.limits = Limits(track_every=track_every)  # the feature code as the gateway's runs it
        warm_up()

    @api.post(SCORE_ROUTE)
    async def score(self, request: Request) -> JSONResponse:
        return await score_upload(request, self.limits, self.chain)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder (import path IMPORT_PATH); args: `repo`, `threads`, `track_every`."""
    args = dict(args or {})
    return OrtScorer.bind(args.get("repo"), args.get("threads"), args.get("track_every", 1))


def app_config(repo: str | os.PathLike | None = None, track_every: int = 1) -> dict[str, Any]:
    return peer_app_entry(APP_NAME, ROUTE_PREFIX, IMPORT_PATH, repo, track_every)
