"""`avpenet score FILE...`: score clips against a running gateway over HTTP (default) or gRPC, print a table.

The part a file is sent as follows its extension: .npz → landmarks, WAV/FLAC/OGG/MP3 → audio, a video →
clip. `score_http` / `score_grpc` are the library form (the demo and the load tests call them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from avpenet import contract
from preprocess_service.protocol import MediaPart, ScoreRequest, ScoreResponse

HELP = "Score clips (video, audio, landmarks .npz) against a running gateway; prints a table."
HTTP_PORT, GRPC_PORT = 8080, 9090  # `avpenet serve` defaults (8000/8001 are Triton's)
DEFAULT_HTTP = f"http://127.0.0.1:{HTTP_PORT}"
DEFAULT_GRPC = f"127.0.0.1:{GRPC_PORT}"
KEY_ENV = "AVPENET_API_KEY"
AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3"}


class ScoreError(RuntimeError):
    """The gateway refused a request: carries the HTTP status or gRPC code and its reason."""

    def __init__(self, status: int | str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def part_for(path: Path) -> str:
    ext = path.suffix.lower()
    if ext == ".npz":
        return "landmarks"
    if ext in AUDIO_EXT:
        return "audio"
    return "clip"


def request_for(paths: list[Path], age_group: str = "unknown", **refs: str | None) -> ScoreRequest:
    """One request from files, e.g. [clip.mp4] or [audio.wav, face.npz] (one file per part)."""
    parts = {}
    for path in paths:
        parts[part_for(path)] = MediaPart(data=path.read_bytes(), filename=path.name)
    return ScoreRequest(**parts, age_group=age_group, **refs)


def score_http(
    url: str, request: ScoreRequest, *, api_key: str | None = None, fhir: bool = False, timeout_s: float = 120
) -> ScoreResponse | dict:
    """POST /v1/score; a ScoreResponse, or the Observation dict when `fhir`. Raises ScoreError."""
    import requests

    files = {
        name: (p.filename or name, p.data, p.content_type or None) for name, p in request.parts().items()
    }
    data = {"age_group": request.age_group}
    data.update({k: v for k in ("subject_ref", "encounter_ref") if (v := getattr(request, k))})
    headers = {"X-Request-ID": request.request_id}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if fhir:
        headers["Accept"] = "application/fhir+json"
    reply = requests.post(
        f"{url.rstrip('/')}/v1/score", files=files, data=data, headers=headers, timeout=timeout_s
    )
    if reply.status_code != 200:
        try:
            detail = reply.json().get("detail", reply.text)
        except ValueError:
            detail = reply.text
        raise ScoreError(reply.status_code, detail)
    return reply.json() if fhir else ScoreResponse.model_validate(reply.json())


def grpc_metadata(api_key: str | None, extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
    md = [(k.lower(), v) for k, v in (extra or {}).items()]
    if api_key:
        md.append(("authorization", f"Bearer {api_key}"))
    return md


def score_grpc(
    target: str, request: ScoreRequest, *, api_key: str | None = None, timeout_s: float = 120, channel=None
) -> ScoreResponse:
    """avpenet.v1.Scoring/Score over an insecure channel (or `channel`); raises ScoreError."""
    import grpc

    from avpenet.v1 import scoring_pb2_grpc

    own = channel is None
    channel = channel or grpc.insecure_channel(
        target,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
    )
    try:
        stub = scoring_pb2_grpc.ScoringStub(channel)
        reply = stub.Score(request.to_proto(), metadata=grpc_metadata(api_key), timeout=timeout_s)
    except grpc.RpcError as exc:
        raise ScoreError(exc.code().name, exc.details() or "") from None
    finally:
        if own:
            channel.close()
    return ScoreResponse.from_proto(reply)


# --- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="clips (.mp4/.mov/.webm/.mkv), audio files, .npz")
    parser.add_argument("--grpc", action="store_true", help="use gRPC instead of HTTP")
    parser.add_argument(
        "--url", help=f"gateway HTTP URL or gRPC host:port (default {DEFAULT_HTTP} / {DEFAULT_GRPC})"
    )
    parser.add_argument("--age-group", default="unknown", choices=contract.AGE_GROUPS)
    parser.add_argument("--api-key", default=None, help=f"API key (default: ${KEY_ENV})")
    parser.add_argument(
        "--together", action="store_true", help="send all files as ONE request (e.g. wav + npz)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON answers instead of a table")


def format_table(rows: list[tuple[str, str, ScoreResponse | ScoreError, float]]) -> str:
    """Fixed-width table: file, protocol, score, level, interval, windows, weights, latency (or error)."""
    head = f"{'file':<28} {'proto':<5} {'score':>5}  {'level':<8} {'90% interval':<12} {'win':>3}  "
    head += f"{'audio/visual':<12} {'ms':>6}"
    lines = [head, "-" * len(head)]
    for name, proto, result, ms in rows:
        short = name if len(name) <= 28 else "…" + name[-27:]
        if isinstance(result, ScoreError):
            lines.append(f"{short:<28} {proto:<5} error {result.status}: {result.detail[:60]}")
            continue
        iv = f"{result.interval_90.low:.1f}-{result.interval_90.high:.1f}"
        w = f"{result.modality_weights.audio:.2f}/{result.modality_weights.visual:.2f}"
        lines.append(
            f"{short:<28} {proto:<5} {result.score:5.2f}  {result.level:<8} {iv:<12} "
            f"{len(result.timeline):>3}  {w:<12} {ms:6.0f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get(KEY_ENV)
    groups = [args.files] if args.together else [[f] for f in args.files]
    rows = []
    failed = 0
    for paths in groups:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            print(f"avpenet score: no such file: {missing[0]}", file=sys.stderr)
            return 2
        request = request_for(paths, args.age_group)
        t0 = time.perf_counter()
        try:
            if args.grpc:
                result = score_grpc(args.url or DEFAULT_GRPC, request, api_key=api_key)
            else:
                result = score_http(args.url or DEFAULT_HTTP, request, api_key=api_key)
        except ScoreError as exc:
            result, failed = exc, failed + 1
        except OSError as exc:  # connection refused etc.
            print(
                f"avpenet score: cannot reach the gateway ({exc.__class__.__name__}); is `avpenet serve` up?"
            )
            return 1
        ms = (time.perf_counter() - t0) * 1000
        rows.append(("+".join(p.name for p in paths), "grpc" if args.grpc else "http", result, ms))
        if args.json and not isinstance(result, ScoreError):
            print(result.model_dump_json(indent=2))
    if not args.json:
        print(format_table(rows))
    return 1 if failed else 0
