"""A resume reaches the Gateway replica that holds its stream: the Gateway deployment's request router.

A stream's state (buffers, its FaceLandmarker, the alert state) lives in the replica that accepted it
(registry.py). Serve's proxy picks a replica per connection, so with several Gateway replicas a reconnect
could land on any of them, and on another one it started afresh (`resumed: false`): the sustained-pain run
and the patient's baseline were lost to a network blip. Each Gateway replica reports the streams it holds to
Serve (`routing_stats`: a hash of each id with its API key id, not the id, which a client may have chosen),
and this router sends a WebSocket whose URL carries `?stream_id=` (the SDK adds it whenever the start names a
stream id) to the replica that reported that hash for the id and the key in the request's `Authorization`.
Stream ids are per API key: two wards that chose the same id hold two streams, each resume routed to its
own. Every other request is routed as by Serve's default router: two replicas drawn (same node first), the
less busy one taken. The holder is ranked first, not alone: one full to its request
cap lets the resume start afresh on another replica rather than wait. Stats are collected every
`request_routing_stats_period_s` (serve_config.yaml), so a resume within that time of its stream's first open
may still land elsewhere; the id then has two copies, and the one attached last takes every later resume
(the other expires `resume_ttl_s` after its last use).
"""

from __future__ import annotations

import hashlib
import pickle
import random
from typing import Any
from urllib.parse import parse_qs

from ray.serve.request_router import LocalityMixin, PendingRequest, RequestRouter, RunningReplica

from preprocess_service.audit import key_id
from preprocess_service.auth import bearer_token
from preprocess_service.stream.protocol import STREAM_ID_QUERY, STREAM_ROUTE

STAT = "stream_keys"  # the routing-stats entry: {routing_key: wall time of its last open or resume}
_HINT = STREAM_ID_QUERY.encode() + b"="
# The Gateway's request_router_config (also in serve_config.yaml, which KubeRay deploys).
ROUTER_CONFIG = {
    "request_router_class": "preprocess_service.stream.affinity:StreamAffinityRouter",
    "request_routing_stats_period_s": 2,
}


def caller(authorization: str | None) -> str:
    """Whose streams a request names: the API key id (audit.key_id, a digest, never the key) of its
    `Authorization` header; the route and the router both derive it so, the router before auth has run."""
    return key_id(bearer_token(authorization))


def routing_key(stream_id: str, api_key_id: str) -> str:
    """A stream's name outside the registry: what a replica reports for a stream it holds, what the router
    looks up and what the checkpoint store keys by. A hash of the id within its API key: the same id under
    two keys is two streams; the id stays out of Serve's state (not secret: a bed number can be guessed
    back)."""
    return hashlib.sha256(f"{api_key_id}\n{stream_id}".encode()).hexdigest()[:24]


def routing_stats(attached: dict[tuple[str, str], float]) -> dict[str, Any]:
    """The Gateway's `record_routing_stats` answer: each stream it holds (attached or kept for a resume), by
    (stream id, API key id), with the wall time of its last open or resume."""
    return {STAT: {routing_key(sid, kid): at for (sid, kid), at in attached.items()}}


def _authorization(scope: dict) -> str | None:
    """The first `Authorization` header of an ASGI scope, decoded as Starlette's `ws.headers` decodes it."""
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == b"authorization":
            return bytes(value).decode("latin-1")
    return None


def stream_hint(pending: PendingRequest | None) -> str | None:
    """The routing key a request asks for: a WebSocket to the stream route with `?stream_id=` in its URL,
    within the API key it presents (an unknown key is refused by the replica, wherever it lands).
    Serve's proxy hands the ingress an HTTP request's ASGI scope pickled (its body follows separately); only
    one that carries the hint is read. A gRPC request's argument holds its media: never scanned."""
    http = pending is not None and getattr(pending.metadata, "is_http_request", False) and pending.args
    arg = pending.args[0] if http else None
    if not isinstance(arg, bytes) or _HINT not in arg:
        return None
    try:
        scope = pickle.loads(arg).asgi_scope  # noqa: S301 (the proxy's own pickle of the request)
    except Exception:  # noqa: BLE001 (not an HTTP request of Serve's proxy: no hint)
        return None
    if scope.get("type") != "websocket" or not str(scope.get("path", "")).endswith(STREAM_ROUTE):
        return None
    values = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1")).get(STREAM_ID_QUERY)
    return routing_key(values[0], caller(_authorization(scope))) if values else None


def holder(candidates: list[RunningReplica], key: str) -> RunningReplica | None:
    """The candidate replica that last reported holding the stream of `key`; of two (a resume that once
    landed elsewhere started a second copy there), the one attached last, so later resumes stay with it."""
    attached = [(r.routing_stats or {}).get(STAT, {}).get(key) for r in candidates]
    held = [(at, i) for i, at in enumerate(attached) if at is not None]
    return candidates[max(held)[1]] if held else None


class StreamAffinityRouter(LocalityMixin, RequestRouter):
    """Holder first for a resume; otherwise power of two choices, same node first. No FIFO mixin: with it a
    replica chosen for one request may be handed to an older waiting one, and a resume must get its own."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        key = stream_hint(pending_request)
        found = holder(candidate_replicas, key) if key is not None else None
        first = [found] if found is not None else []
        rest = [r for r in candidate_replicas if r not in first]
        by_id = {r.replica_id: r for r in rest}
        near = [by_id[i] for i in self.apply_locality_routing(pending_request) if i in by_id] or rest
        ranks = [first, random.sample(near, min(2, len(near)))]
        return [rank for rank in ranks if rank]
