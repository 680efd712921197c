"""The gateway reads Triton's repository index (twice per scoring request, for the versions it reports) from
the protobuf answer, not through tritonclient's JSON conversion: the rows must be the same."""

from __future__ import annotations

import asyncio

import pytest
import tritonclient.grpc as grpcclient

from preprocess_service.triton_client import TritonClient


@pytest.mark.integration  # starts a real server
def test_rows_equal_the_json_index(triton_server):
    async def rows() -> list[dict[str, str]]:
        client = TritonClient(triton_server.grpc_url, timeout_s=30.0)
        try:
            return await client.repository()
        finally:
            await client.close()

    got = asyncio.run(rows())
    index = grpcclient.InferenceServerClient(triton_server.grpc_url).get_model_repository_index(as_json=True)
    want = sorted(
        (
            {"name": m.get("name", ""), "version": str(m.get("version", "")), "state": m.get("state", "")}
            for m in index.get("models", [])
        ),
        key=lambda r: (r["name"], r["version"]),
    )
    assert got == want and any(r["state"] == "READY" for r in got)
