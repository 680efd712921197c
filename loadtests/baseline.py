"""The naive alternative the benchmark compares against: one Ray Serve deployment, eager PyTorch per request.

What a user would build without Triton: a FastAPI ingress that parses the upload, runs the same feature code
(`preprocess_service.extract.extract`, i.e. `avpenet.features`) and calls the PyTorch model once per request
in eval mode under `torch.inference_mode()` - no dynamic batching across requests, no ONNX Runtime, no
separate feature deployment. The weights are the ones Triton serves (rebuilt from each part's manifest), so
both systems compute the same score from the same bytes; `avpenet bench` checks that before timing anything.

Deployed as a second Serve application (route prefix `/naive`) in the bench's Ray cluster, behind the same
HTTP proxy as the gateway, so the two differ only in what happens after the proxy.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the class-based route.

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from avpenet import cpus
from preprocess_service.openapi import SCORE_ROUTE

APP_NAME = "naive"
ROUTE_PREFIX = "/naive"
IMPORT_PATH = "loadtests.baseline:build_app"
MAX_ONGOING = 64  # accepts the bench's highest concurrency (32) without queueing in the proxy
# Ray's logical CPUs for each peer app: the bench's 2-CPU cluster holds the gateway app (0.75) + two peers.
# A scheduling token only: each peer sets its own thread count to every core.
PEER_CPUS = 0.5

api = FastAPI(title="AVPENet naive baseline")


def served_model(repo: str | os.PathLike | None = None):
    """The PyTorch AVPENet whose parts carry the weights of the newest version Triton serves of each part."""
    from avpenet import contract
    from avpenet.model import AVPENet
    from ensemble import DEFAULT_REPOSITORY
    from ensemble.export import model_from_source
    from ensemble.versions import latest, read_manifest

    repo = Path(repo) if repo is not None else DEFAULT_REPOSITORY
    model = AVPENet().eval()
    for spec in contract.PARTS:
        version = latest(repo / spec.name)
        source = read_manifest(repo / spec.name, version).get("source") if version else None
        if source is None:
            raise RuntimeError(f"{repo / spec.name}: no manifest with a source; run `avpenet export` first")
        part = model_from_source(source).part(spec.name)
        setattr(model, spec.name, part)
    return model.eval()


async def score_upload(request: Request, limits: Any, infer: Any) -> JSONResponse:
    """Parse, extract on a thread, `infer(inputs)` on a thread, aggregate: the peers' whole request path."""
    from avpenet import contract
    from avpenet.aggregate import aggregate_windows
    from preprocess_service.errors import status_of
    from preprocess_service.extract import extract
    from preprocess_service.multipart import parse_score_form
    from preprocess_service.protocol import new_request_id

    start = time.perf_counter()
    try:
        body = await request.body()
        parsed = await asyncio.to_thread(
            parse_score_form, body, request.headers.get("content-type"), new_request_id(None)
        )
        extracted = await asyncio.to_thread(extract, parsed, limits)
        t_model = time.perf_counter()
        out = await asyncio.to_thread(infer, extracted.inputs)
    except Exception as exc:
        status, _ = status_of(exc)
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)
    timings = dict(extracted.timings_ms)
    timings["model"] = (time.perf_counter() - t_model) * 1000.0
    clip = aggregate_windows(
        out[contract.SCORE.name],
        out[contract.LOG_VARIANCE.name],
        out[contract.CLASS_PROBS.name],
        out[contract.MODALITY_WEIGHTS.name],
    )
    timings["total"] = (time.perf_counter() - start) * 1000.0
    windows = out[contract.SCORE.name].reshape(-1)
    return JSONResponse(
        {
            "score": float(clip["score"]),
            "level": contract.level_of(float(clip["score"])),
            "timeline": [{"index": i, "score": float(s)} for i, s in enumerate(windows)],
            "timings_ms": {k: round(v, 2) for k, v in timings.items()},
        }
    )


@serve.deployment(
    name="NaiveScorer", ray_actor_options={"num_cpus": PEER_CPUS}, max_ongoing_requests=MAX_ONGOING
)
@serve.ingress(api)
class NaiveScorer:
    """Parse, extract features, run eager PyTorch: each request through the model alone, nothing batched."""

    def __init__(self, repo: str | None = None, threads: int | None = None, track_every: int = 1) -> None:
        import torch

        from preprocess_service.deployments import warm_up
        from preprocess_service.settings import Limits

        self.model = served_model(repo)  # first: importing the model caps the pool, not `threads` after it
        # Ray pins OMP_NUM_THREADS to the actor's CPUs (1); a user outside Ray gets every CPU it may use.
        torch.set_num_threads(threads or cpus.available())
        self.limits = Limits(track_every=track_every)  # the feature code as the gateway's runs it
        warm_up()

    def _infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import torch

        from avpenet import contract
        from avpenet.features.windows import model_inputs_of

        with torch.inference_mode():  # the request's AUDIO rows back to the windows the PyTorch model reads
            tensors = {name: torch.from_numpy(array) for name, array in model_inputs_of(inputs).items()}
            out = self.model(**tensors)
        return {spec.name: out[spec.name].numpy() for spec in contract.ENSEMBLE.outputs}

    @api.post(SCORE_ROUTE)
    async def score(self, request: Request) -> JSONResponse:
        return await score_upload(request, self.limits, self._infer)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder (import path IMPORT_PATH); args: `repo`, `threads`, `track_every`."""
    args = dict(args or {})
    return NaiveScorer.bind(args.get("repo"), args.get("threads"), args.get("track_every", 1))


def peer_app_entry(
    name: str, prefix: str, import_path: str, repo: str | os.PathLike | None, track_every: int = 1
) -> dict[str, Any]:
    """A peer app as a ServeDeploySchema application entry (deployed beside the gateway's); `track_every`:
    the gateway's `limits.track_every`, so that every system tracks the same frames."""
    return {
        "name": name,
        "route_prefix": prefix,
        "import_path": import_path,
        "args": {"repo": None if repo is None else str(repo), "track_every": track_every},
    }


def app_config(repo: str | os.PathLike | None = None, track_every: int = 1) -> dict[str, Any]:
    return peer_app_entry(APP_NAME, ROUTE_PREFIX, IMPORT_PATH, repo, track_every)
