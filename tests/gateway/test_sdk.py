"""The SDK's retries against a real HTTP server on loopback: retried under ONE Idempotency-Key and request id,
Retry-After honoured, client errors not retried, typed results."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from clinical_samples import response

from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client, ScoreError


class Gateway:
    """Answers POST /v1/score with the queued (status, body) pairs and records each request's headers."""

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        self.answers = answers
        self.seen: list[dict[str, str]] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                gateway.seen.append({k.lower(): v for k, v in self.headers.items()})
                status, body = gateway.answers[min(len(gateway.seen), len(gateway.answers)) - 1]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def request_():
    return ScoreRequest(audio=MediaPart(data=b"RIFF....", filename="a.wav"), age_group="adult")


def error(status: int, detail: str) -> tuple[int, str]:
    return status, json.dumps({"error": "X", "detail": detail, "request_id": "r"})


def test_retries_503_under_one_idempotency_key(request_):
    gateway = Gateway([error(503, "triton down"), (200, response().model_dump_json())])
    try:
        result = Client(gateway.url, api_key="k", retries=2, backoff_s=0.01).score(request_)
    finally:
        gateway.close()
    assert result.attempts == 2 and result.score.score == response().score and not result.replayed
    first, second = gateway.seen
    assert first["idempotency-key"] == second["idempotency-key"] and len(first["idempotency-key"]) == 32
    assert first["x-request-id"] == second["x-request-id"] == request_.request_id
    assert first["authorization"] == "Bearer k"


def test_client_errors_are_not_retried_and_retries_run_out(request_):
    gateway = Gateway([error(404, "model_versions: fusion version 9 is not served")])
    try:
        with pytest.raises(ScoreError) as info:
            Client(gateway.url, retries=3, backoff_s=0.01).score(request_)
        assert info.value.status == 404 and "fusion version 9" in info.value.detail and len(gateway.seen) == 1
    finally:
        gateway.close()
    gateway = Gateway([error(503, "busy")])
    try:
        with pytest.raises(ScoreError) as info:
            Client(gateway.url, retries=2, backoff_s=0.01).score(request_)
        assert info.value.status == 503 and len(gateway.seen) == 3
    finally:
        gateway.close()
