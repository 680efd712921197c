"""Helpers the reliability, fault and security tests share: raw calls, metrics, logs, files written.

Raw calls send the corpus's bytes as they are (no client library fixes them up) and return what came back
with the elapsed time, so each test can bound latency as well as check the status.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import requests

SCORE_METHOD = "/avpenet.v1.Scoring/Score"
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


@dataclass
class Answer:
    status: int | str  # HTTP status or gRPC code name
    seconds: float
    detail: str = ""
    headers: dict[str, str] | None = None


def http_post(url: str, body: bytes, content_type: str, *, key: str | None, timeout: float = 60.0,
              headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
    hdrs = {"Content-Type": content_type, **(headers or {})}
    if key:
        hdrs["Authorization"] = f"Bearer {key}"
    start = time.perf_counter()
    reply = requests.post(f"{url}/v1/score", data=body, headers=hdrs, timeout=timeout)
    return Answer(reply.status_code, time.perf_counter() - start, reply.text, dict(reply.headers))


def grpc_call(channel: grpc.Channel, message: bytes, *, key: str | None, timeout: float = 60.0,
              metadata: Iterable[tuple[str, str]] = ()) -> Answer:  # fmt: skip
    """Score with raw request bytes (no serializer: the bytes go out exactly as given)."""
    call = channel.unary_unary(SCORE_METHOD, request_serializer=None, response_deserializer=None)
    md = list(metadata)
    if key:
        md.append(("authorization", f"Bearer {key}"))
    start = time.perf_counter()
    try:
        call(message, metadata=md, timeout=timeout)
    except grpc.RpcError as exc:
        return Answer(exc.code().name, time.perf_counter() - start, exc.details() or "")
    return Answer("OK", time.perf_counter() - start)


def gateway_metrics(stack) -> str:
    """The gateway's Prometheus exposition (one gateway replica in the test stack)."""
    return requests.get(f"{stack.http_url}/metrics", timeout=10).text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of an exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


# --- logs and files written ---------------------------------------------------------------------------------
def log_files(ray_dir: str | os.PathLike) -> list[Path]:
    """Every log Ray and Serve wrote for the session (driver, raylet, workers, proxies, replicas)."""
    return [p for p in Path(ray_dir).rglob("*") if p.is_file() and (p.suffix in (".log", ".out", ".err"))]


def find_in_files(paths: Iterable[Path], needles: Iterable[bytes]) -> dict[str, list[str]]:
    """needle -> files containing it (read in full: logs of a test session are a few MB)."""
    needles = list(needles)
    hits: dict[str, list[str]] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for needle in needles:
            if needle in data:
                hits.setdefault(needle.decode("latin-1"), []).append(str(path))
    return hits


Stamps = dict[Path, tuple[int, int]]  # file -> (mtime in ns, size)
NOT_SCANNED = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}


def stamps(root: str | os.PathLike, *, depth: int, skip: Iterable[str | os.PathLike] = ()) -> Stamps:
    """The regular files under `root` (to `depth` levels) with their mtime and size, leaving out the trees in
    `skip`, pytest's own folders and tool caches; a diff of two says what was written in between."""
    skipped = {Path(s).resolve() for s in skip}
    return dict(_walk(Path(root).resolve(), skipped, depth))


def written(before: Stamps, after: Stamps) -> list[Path]:
    """Files created or rewritten between two `stamps` of the same tree."""
    return sorted(path for path, stamp in after.items() if before.get(path) != stamp)


def _walk(folder: Path, skipped: set[Path], depth: int) -> Iterator[tuple[Path, tuple[int, int]]]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("pytest-of-") or entry.name in NOT_SCANNED:
            continue
        path = Path(entry.path)
        if path in skipped:
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                yield path, (info.st_mtime_ns, info.st_size)
            elif depth > 1 and entry.is_dir(follow_symlinks=False):
                yield from _walk(path, skipped, depth - 1)
        except OSError:  # gone, or another user's, while it was read
            continue
