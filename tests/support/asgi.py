"""Starlette requests built from an ASGI scope, for calling the gateway's HTTP handlers without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from starlette.requests import Request


def score_request(messages: list[dict], headers: Iterable[tuple[bytes, bytes]] = ()) -> Request:
    """A Starlette request for POST /v1/score whose body arrives as `messages`, then nothing more; `headers`
    are added after its multipart content type, as raw (name, value) pairs, so a name may repeat."""
    scope = {"type": "http", "method": "POST", "path": "/v1/score", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=XX"), *headers]}  # fmt: skip
    pending = iter(messages)

    async def receive() -> dict:
        try:
            return next(pending)
        except StopIteration:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable") from None

    return Request(scope, receive)
