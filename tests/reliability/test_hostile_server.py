"""Hostile callers at the protocol level, against the session stack (real Ray Serve proxies + real Triton).

Slow uploads over real sockets, oversized and malformed gRPC messages, request ids and text fields that only
look valid, and the refusal counters an SRE watches. Media-level attacks live in the corpus (corpus/cases.py).
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import grpc
import pytest
import requests
from corpus.harness import GRPC_OPTIONS, Answer, gateway_metrics, grpc_call, http_post, sample
from corpus.wire import CTYPE, valid_clip
from support.gateway import API_KEY
from support.processes import descendants, rss_mb

from avpenet.v1 import scoring_pb2
from preprocess_service import telemetry
from preprocess_service.settings import Limits

pytestmark = pytest.mark.integration

SLOW_CONNECTIONS = 16  # the probe's slow-loris count; twice the fixture's max_in_flight (8)
DRIP_S = 2.0  # one byte this often, after the headers and 100 bytes
SLOW_END_S = Limits().upload_grace_s + 15.0  # the gateway ends each slow upload within this (408)


# --- slow uploads -------------------------------------------------------------------------------------------
def read_reply(sock: socket.socket) -> bytes:
    """One HTTP response: headers and Content-Length bytes of body (or what came before a close/2 s pause)."""
    sock.settimeout(2.0)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
    except OSError:
        pass
    return data


class SlowLoris:
    """Real sockets that send headers, 100 bytes, then one byte every DRIP_S, recording what comes back."""

    def __init__(self, url: str, n: int) -> None:
        parts = urlsplit(url)
        head = (
            f"POST /v1/score HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: {CTYPE}\r\nContent-Length: 1000000\r\n\r\n"
        ).encode()
        self.socks = [socket.create_connection((parts.hostname, parts.port), timeout=30) for _ in range(n)]
        for sock in self.socks:
            sock.sendall(head + b"-" * 100)
        self.start = time.monotonic()
        self.answers: dict[int, tuple[float, bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        while not self._stop.is_set() and len(self.answers) < len(self.socks):
            open_socks = [s for i, s in enumerate(self.socks) if i not in self.answers]
            readable, _, _ = select.select(open_socks, [], [], DRIP_S)
            for sock in readable:
                self.answers[self.socks.index(sock)] = (time.monotonic() - self.start, read_reply(sock))
            for i, sock in enumerate(self.socks):
                if i not in self.answers:
                    try:
                        sock.sendall(b"-")
                    except OSError:
                        self.answers[i] = (time.monotonic() - self.start, b"")

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def test_slow_uploads_hold_no_slot_and_are_ended_with_408(gateway_stack):
    """16 slow-loris connections (twice max_in_flight): valid HTTP and gRPC requests meanwhile score."""
    http_body, message = valid_clip()
    assert http_post(gateway_stack.http_url, http_body, CTYPE, key=API_KEY).status == 200  # warm
    before = gateway_metrics(gateway_stack)
    loris = SlowLoris(gateway_stack.http_url, SLOW_CONNECTIONS)
    try:
        time.sleep(1.5)  # the slow uploads have reached the gateway
        valid: list[tuple[float, Answer]] = []
        with grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS) as channel:
            for _ in range(2):
                valid.append((time.monotonic() - loris.start, http_post(gateway_stack.http_url, http_body,
                                                                        CTYPE, key=API_KEY)))  # fmt: skip
                valid.append((time.monotonic() - loris.start, grpc_call(channel, message, key=API_KEY)))
        loris.wait(SLOW_END_S)
        answers = dict(loris.answers)
    finally:
        loris.close()
    assert [a.status for _, a in valid] == [200, "OK", 200, "OK"], [
        (a.status, a.detail[:200]) for _, a in valid
    ]
    assert len(answers) == SLOW_CONNECTIONS, f"{SLOW_CONNECTIONS - len(answers)} slow uploads never ended"
    first_end = min(t for t, _ in answers.values())
    assert any(t < first_end for t, _ in valid), "no valid request was sent while the slow uploads were open"
    for t, raw in answers.values():
        assert raw.startswith(b"HTTP/1.1 408"), raw[:200]
        assert b"upload too slow" in raw
        assert t < SLOW_END_S
    after = gateway_metrics(gateway_stack)
    slow = sample(after, telemetry.REFUSALS + "_total", protocol="http", reason="SlowUpload")
    assert slow - sample(before, telemetry.REFUSALS + "_total", protocol="http", reason="SlowUpload") == 16
    print(f"slow uploads ended with 408 after {first_end:.1f}-{max(t for t, _ in answers.values()):.1f} s")


# --- gRPC messages ------------------------------------------------------------------------------------------
def proxy_rss_mb() -> float:
    procs = [proc for proc, _ in descendants("ProxyActor")]
    assert procs, "no Serve proxy process found"
    return rss_mb(procs)


def test_oversized_grpc_message_is_refused_before_it_is_read(gateway_stack):
    """The proxy's receive limit is the upload limit (+64 KiB framing): 64 MiB is refused, not buffered."""
    big = scoring_pb2.ScoreRequest(audio=scoring_pb2.MediaFile(data=b"\0" * (64 << 20))).SerializeToString()
    options = [("grpc.max_send_message_length", 128 << 20)]
    with grpc.insecure_channel(gateway_stack.grpc_target, options=options) as channel:
        grpc_call(channel, valid_clip()[1], key=API_KEY)  # warm
        rss = proxy_rss_mb()
        answers = [grpc_call(channel, big, key=API_KEY, timeout=30) for _ in range(3)]
        grown = proxy_rss_mb() - rss
    assert {a.status for a in answers} == {"RESOURCE_EXHAUSTED"}, [(a.status, a.detail) for a in answers]
    assert max(a.seconds for a in answers) < 5.0
    assert grown < 32, f"the proxy grew by {grown:.0f} MB for three refused 64 MiB messages"
    print(f"64 MiB gRPC: refused in {max(a.seconds for a in answers):.2f} s, proxy RSS {grown:+.0f} MB")


MALFORMED = {
    "truncated length": b"\x12\xff\xff\xff\x0f" + b"x" * 10,
    "bad wire type": b"\x17abc",
    "json": b'{"audio": "AAAA"}',
    "bad utf-8 in a string field": b"\x2a\x02\xff\xfe",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_protobuf_is_invalid_argument(gateway_stack, name):
    with grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS) as channel:
        answer = grpc_call(channel, MALFORMED[name], key=API_KEY, timeout=30)
        assert grpc_call(channel, valid_clip()[1], key=API_KEY).status == "OK"
    assert answer.status == "INVALID_ARGUMENT", (answer.status, answer.detail)
    assert "malformed avpenet.v1.ScoreRequest" in answer.detail


# --- ids and text fields ------------------------------------------------------------------------------------
@pytest.mark.parametrize("request_id", ["abc\n", "abc\r\n", "a" * 65, "-leading-dash", "a b"])
def test_invalid_grpc_request_id_is_refused_before_scoring(gateway_stack, request_id):
    before = gateway_metrics(gateway_stack)
    with grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS) as channel:
        answer = grpc_call(channel, valid_clip(request_id=request_id)[1], key=API_KEY)
    after = gateway_metrics(gateway_stack)
    assert answer.status == "INVALID_ARGUMENT" and "request_id" in answer.detail, answer
    windows = telemetry.WINDOWS + "_total"
    assert sample(after, windows, protocol="grpc") == sample(before, windows, protocol="grpc"), (
        "it was scored"
    )


@pytest.mark.parametrize("age_group", [b" adult", b"adult ", b"\tadult\r\n"])
def test_age_group_whitespace_is_treated_alike_on_both_protocols(gateway_stack, age_group):
    http_body, message = valid_clip(age_group=age_group)
    reply = requests.post(f"{gateway_stack.http_url}/v1/score", data=http_body, timeout=60,
                          headers={"Content-Type": CTYPE, "Authorization": f"Bearer {API_KEY}"})  # fmt: skip
    with grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS) as channel:
        call = channel.unary_unary(
            "/avpenet.v1.Scoring/Score", request_serializer=None,
            response_deserializer=scoring_pb2.ScoreResponse.FromString,
        )  # fmt: skip
        answer = call(message, metadata=[("authorization", f"Bearer {API_KEY}")], timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["age_group"] == answer.age_group == "adult"
    assert abs(reply.json()["score"] - answer.score) < 1e-4


# --- refusals in metrics ------------------------------------------------------------------------------------
def test_refusals_are_counted_by_reason_on_both_protocols(gateway_stack):
    http_body, message = valid_clip()
    before = gateway_metrics(gateway_stack)
    assert http_post(gateway_stack.http_url, http_body, CTYPE, key="wrong").status == 401
    assert http_post(gateway_stack.http_url, b"not multipart", "text/plain", key=API_KEY).status == 415
    with grpc.insecure_channel(gateway_stack.grpc_target, options=GRPC_OPTIONS) as channel:
        assert grpc_call(channel, message, key="wrong").status == "UNAUTHENTICATED"
        assert grpc_call(channel, b"\x17abc", key=API_KEY).status == "INVALID_ARGUMENT"
    after = gateway_metrics(gateway_stack)
    name = telemetry.REFUSALS + "_total"
    for protocol, reason in [("http", "Unauthenticated"), ("http", "UnsupportedMedia"),
                             ("grpc", "Unauthenticated"), ("grpc", "InvalidRequest")]:  # fmt: skip
        grown = sample(after, name, protocol=protocol, reason=reason) - sample(
            before, name, protocol=protocol, reason=reason
        )
        assert grown == 1, (protocol, reason, grown)
