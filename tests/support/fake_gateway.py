"""Gateway stand-ins on loopback for the client side (SDK, `avpenet score`, `avpenet monitor`): FakeGateway
answers POSTs with queued answers and records each request's headers; a GET (a WebSocket upgrade) gets 404.
FakeGrpcGateway answers avpenet.v1.Scoring/Score with queued answers and records each call."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path


class FakeGateway:
    """`answers`: (status, body text[, how]) in turn, the last repeated; `how` may hold `delay` (s before
    answering), `type` (Content-Type), `cut` (the body ends 5,000 bytes short and the connection closes),
    `location` (a redirect's target), `headers` (more headers, e.g. X-HL7-Delivery). After `stop_after`
    answers every further connection is dropped unanswered (the gateway gone). A 503 carries
    `Retry-After: 0`. `read`: each request's body bytes read; `bodies`: each body, when `keep_bodies` (off:
    the SDK's memory tests count this process's allocations)."""

    def __init__(
        self, answers: list[tuple], stop_after: int | None = None, keep_bodies: bool = False
    ) -> None:
        self.seen: list[dict[str, str]] = []
        self.read: list[int] = []
        self.bodies: list[bytes] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # as a proxy answers a WebSocket upgrade

            def do_POST(self) -> None:  # noqa: N802
                length = left = int(self.headers["content-length"])
                kept = []  # held only when asked: the SDK's memory tests count this process's allocations
                while left > 0 and (block := self.rfile.read(min(left, 1 << 16))):
                    left -= len(block)
                    kept += [block] if keep_bodies else []
                gateway.bodies += [b"".join(kept)] if keep_bodies else []
                gateway.read.append(length - left)
                gateway.seen.append({k.lower(): v for k, v in self.headers.items()})
                if stop_after is not None and len(gateway.seen) > stop_after:
                    self.close_connection = True  # no answer at all: the client sees the link drop
                    return
                status, body, *how = answers[min(len(gateway.seen), len(answers)) - 1]
                how = how[0] if how else {}
                time.sleep(how.get("delay", 0.0))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", how.get("type", "application/json"))
                self.send_header("Content-Length", str(len(data) + (5000 if "cut" in how else 0)))
                if status == 503:
                    self.send_header("Retry-After", "0")
                if "location" in how:
                    self.send_header("Location", how["location"])
                for name, value in how.get("headers", {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = "cut" in how

            def do_GET(self) -> None:  # noqa: N802
                self.send_error(404, "no such route")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeGrpcGateway:
    """avpenet.v1.Scoring/Score on loopback: `answers` (ScoreResponse messages, or refusals as (StatusCode,
    details, trailing metadata)) in turn, the last repeated. `seen`: each call's (metadata dict, request_id
    field); `requests`: each call's ScoreRequest message."""

    def __init__(self, answers: list) -> None:
        from concurrent import futures

        import grpc

        from avpenet.v1 import scoring_pb2 as pb

        self.seen: list[tuple[dict[str, str], str]] = []
        self.requests: list = []

        def score(request, context):
            self.requests.append(request)
            self.seen.append((dict(context.invocation_metadata()), request.request_id))
            answer = answers[min(len(self.seen), len(answers)) - 1]
            if isinstance(answer, tuple):
                code, details, trailing = answer
                context.set_trailing_metadata(trailing)
                context.abort(code, details)
            return answer

        handler = grpc.unary_unary_rpc_method_handler(
            score,
            request_deserializer=pb.ScoreRequest.FromString,
            response_serializer=pb.ScoreResponse.SerializeToString,
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("avpenet.v1.Scoring", {"Score": handler}),)
        )
        self.target = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(None)


def placeholder_wavs(folder: Path, names: str = "ab") -> list[Path]:
    """Files `avpenet score` accepts and sends as they are (a stand-in gateway never decodes them)."""
    paths = [folder / f"{name}.wav" for name in names]
    for path in paths:
        path.write_bytes(b"RIFF0000WAVE")
    return paths


def delivered(body: str, delivery: str, replayed: bool = False) -> tuple:
    """A FakeGateway answer: the gateway's 200 for a scored request whose HL7 delivery outcome is `delivery`
    (X-HL7-Delivery), marked as an Idempotency-Key replay when `replayed`."""
    headers = {"X-HL7-Delivery": delivery} | ({"Idempotent-Replayed": "true"} if replayed else {})
    return 200, body, {"headers": headers}
