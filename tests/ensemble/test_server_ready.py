"""A TritonServer is ready only once its metrics port answers too: Triton starts its metrics service last,
after /v2/health/ready already says 200, and a test reading a fresh server's metrics was refused (it failed
a fresh clone's run once). A loopback HTTP server stands in for Triton's health API; no tritonserver here."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ensemble.server import TritonServer


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_server_whose_metrics_port_is_not_open_yet_is_not_ready() -> None:
    health = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    metrics = socket.socket()
    metrics.bind(("127.0.0.1", 0))  # bound, not listening: as before Triton starts its metrics service
    try:
        server = TritonServer(http_port=health.server_address[1], metrics_port=metrics.getsockname()[1])
        assert not server.is_ready()
        metrics.listen()
        assert server.is_ready()
    finally:
        metrics.close()
        health.shutdown()
        health.server_close()
