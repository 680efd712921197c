"""A tiny OTLP/HTTP trace receiver on loopback: what Triton's and the gateway's exporters post to.

No collector ships in any registry we can use, so tests decode `ExportTraceServiceRequest` protobufs
(opentelemetry-proto) themselves: every span posted to `<url>/v1/traces` is kept as a plain record.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import json as json_lib
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    service: str  # the resource's service.name
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str  # "" for a root
    attributes: dict = field(default_factory=dict)


class OtlpReceiver:
    """`with OtlpReceiver() as rx: rx.endpoint ... rx.spans` — binds 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._add(body, json="json" in (self.headers.get("Content-Type") or ""))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """http://127.0.0.1:PORT (the base; exporters post to /v1/traces under it)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _add(self, body: bytes, json: bool) -> None:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        if json:  # Triton's C++ exporter posts OTLP/JSON
            request = json_format.ParseDict(_ids_to_base64(json_lib.loads(body)), ExportTraceServiceRequest())
        else:
            request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attrs.get("service.name", "")
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, predicate, timeout_s: float) -> bool:
        """Poll until `predicate(self)` holds (exporters batch and post on their own schedule)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.2)
        return predicate(self)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _ids_to_base64(node):
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping of `bytes` expects base64."""
    if isinstance(node, list):
        return [_ids_to_base64(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
            value = base64.b64encode(bytes.fromhex(value)).decode()
        out[key] = _ids_to_base64(value)
    return out


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None
