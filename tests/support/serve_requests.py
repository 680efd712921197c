"""What Serve's HTTP proxy hands a request router: an HTTP or WebSocket request's ASGI scope, pickled, as the
first argument of a pending request (stream/affinity.py reads it)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from ray.serve._private.common import StreamingHTTPRequest


def scope(path: str, query: bytes, kind: str = "websocket", authorization: str | None = None) -> dict:
    """An ASGI scope as the proxy's server builds it (header names in lower case, values as bytes)."""
    headers = [] if authorization is None else [(b"authorization", authorization.encode("latin-1"))]
    return {"type": kind, "path": path, "query_string": query, "headers": headers}


def scope_pickle(path: str, query: bytes, kind: str = "websocket", authorization: str | None = None) -> bytes:
    asgi = scope(path, query, kind, authorization)
    return pickle.dumps(StreamingHTTPRequest(asgi_scope=asgi, proxy_actor_name="proxy"))


def pending(arg, http: bool = True) -> SimpleNamespace:
    """A PendingRequest as far as the router reads it."""
    return SimpleNamespace(args=[arg], metadata=SimpleNamespace(is_http_request=http))
