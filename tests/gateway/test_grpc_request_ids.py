"""gRPC trailers carried two unrelated ids for one call: `request_id` (Ray Serve's proxy: the caller's
`request_id` metadata, else its own UUID) and `x-request-id` (the gateway's, a fresh uuid4 when the caller
sent none). With no id sent, the gateway now adopts Ray's, so both trailers name the call the same; an id the
caller sends still wins (docs/INTEGRATION.md, request id)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from ray.serve import context as serve_context

from avpenet.v1 import scoring_pb2
from preprocess_service.grpc_methods import GrpcMethods
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings


class Context:
    def __init__(self, metadata: list[tuple[str, str]]):
        self.metadata, self.trailing = metadata, {}

    def invocation_metadata(self):
        return self.metadata

    def set_code(self, code) -> None:
        self.code = code.name

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailing) -> None:
        self.trailing.update(trailing)


def trailers(metadata: list[tuple[str, str]], serve_id: str) -> dict[str, str]:
    """The trailers the gateway sets on a refused Score (no media part) inside a Serve request `serve_id`."""
    message = scoring_pb2.ScoreRequest(age_group="adult").SerializeToString()

    async def run() -> Context:
        serve_context._serve_request_context.set(serve_context._RequestContext(request_id=serve_id))
        methods, grpc_context = GrpcMethods(), Context(metadata)
        methods.service = ScoringService(
            GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})
        )
        try:
            await methods.Score(message, grpc_context)
        finally:
            await methods.service.close()
        return grpc_context

    grpc_context = contextvars.copy_context().run(asyncio.run, run())
    assert grpc_context.code == "INVALID_ARGUMENT", grpc_context.details
    return grpc_context.trailing


def test_with_no_id_sent_the_gateway_adopts_the_id_rays_proxy_sends_back_as_request_id():
    serve_id = "6c8f0a1e-6a2b-4f57-9f3c-1d2e3f4a5b6c"
    assert trailers([], serve_id)["x-request-id"] == serve_id


@pytest.mark.parametrize("name", ["x-request-id", "request_id"])
def test_an_id_the_caller_sends_is_still_the_gateways(name):
    assert trailers([(name, "ward-7.req-42")], "6c8f0a1e-6a2b-4f57-9f3c-1d2e3f4a5b6c")["x-request-id"] == (
        "ward-7.req-42"
    )
