"""`avpenet demo` (the README's main command): start the real stack, score the bundled example clips over
HTTP and gRPC, print one readable table, stop.

The examples (`examples/`) are AVPE-Synth clips: rendered MP4s of the animated real face with the clip's
sound, an audio-only WAV, and face-landmark `.npz` files (the privacy mode where raw video never leaves the
bedside). Their rater labels are printed beside the scores: a reader sees what the model gets right and wrong.
"""

from __future__ import annotations

import argparse
import csv
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HELP = "Start Triton + the gateway, score the bundled example clips over HTTP and gRPC, print a table, stop."
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


@dataclass(frozen=True)
class Example:
    """One row of examples/examples.csv: files sent together as one request, and the clip's rater label."""

    name: str
    files: tuple[Path, ...]
    age_group: str
    label: float
    shows: str


def load_examples(directory: Path = EXAMPLES_DIR) -> list[Example]:
    with (directory / "examples.csv").open(newline="") as fh:
        return [
            Example(
                name=row["name"],
                files=tuple(directory / f for f in row["files"].split("+")),
                age_group=row["age_group"],
                label=float(row["label"]),
                shows=row["shows"],
            )
            for row in csv.DictReader(fh)
        ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=Path, default=EXAMPLES_DIR, help="folder with examples.csv")
    parser.add_argument(
        "--fhir", action="store_true", help="also print the FHIR Observation of the first clip"
    )


def _table(rows: list[tuple[Example, str, object, float]]) -> str:
    from avpenet.contract import level_of
    from preprocess_service.client import ScoreError

    head = (
        f"{'example':<24} {'proto':<5} {'age':<7} {'label':>5} {'score':>5}  {'level':<8} "
        f"{'90% interval':<12} {'win':>3} {'audio/visual':<12} {'ms':>6}"
    )
    lines = [head, "-" * len(head)]
    for ex, proto, result, ms in rows:
        prefix = f"{ex.name:<24} {proto:<5} {ex.age_group:<7} {ex.label:5.1f}"
        if isinstance(result, ScoreError):
            lines.append(f"{prefix} error {result.status}: {result.detail[:70]}")
            continue
        iv = f"{result.interval_90.low:.1f}-{result.interval_90.high:.1f}"
        w = f"{result.modality_weights.audio:.2f}/{result.modality_weights.visual:.2f}"
        mark = "" if result.level == level_of(ex.label) else " *"
        lines.append(
            f"{prefix} {result.score:5.2f}  {result.level + mark:<8} {iv:<12} {len(result.timeline):>3} "
            f"{w:<12} {ms:6.0f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from preprocess_service.client import ScoreError, request_for, score_grpc, score_http
    from preprocess_service.stack import LocalStack

    examples = load_examples(args.examples)
    key = secrets.token_urlsafe(24)  # Ray's gRPC proxy binds every interface, so the gateway demands a key
    print("starting Triton and the Ray Serve gateway on loopback (about 30-60 s)...", flush=True)
    failures = 0
    rows: list[tuple[Example, str, object, float]] = []
    with LocalStack(api_keys=[key]) as stack:
        print(f"gateway HTTP {stack.http_url}  gRPC {stack.grpc_target}  Triton {stack.triton.grpc_url}\n")
        for ex in examples:
            request = request_for(list(ex.files), ex.age_group)
            for proto in ("http", "grpc"):
                t0 = time.perf_counter()
                try:
                    if proto == "http":
                        result = score_http(stack.http_url, request, api_key=key)
                    else:
                        result = score_grpc(stack.grpc_target, request, api_key=key)
                except ScoreError as exc:
                    result, failures = exc, failures + 1
                rows.append((ex, proto, result, (time.perf_counter() - t0) * 1000))
        if args.fhir and examples:
            import json

            obs = score_http(
                stack.http_url,
                request_for(list(examples[0].files), examples[0].age_group),
                api_key=key,
                fhir=True,
            )
            print(f"FHIR R4 Observation for {examples[0].name}:\n{json.dumps(obs, indent=2)}\n")
        clip = args.examples / "neonate-cry-high.mp4"
        if clip.exists():
            from cli.monitor import demo_session

            print(f"monitoring stream (WebSocket /v1/stream): {clip.name} looped twice, 4x real time:")
            print("\n".join("  " + line for line in demo_session(stack.http_url, key, clip)) + "\n")
    print(_table(rows))
    print(
        "\nlabel = median of three simulated raters; * = level differs from the label's level."
        "\nReference weights trained on synthetic data (AVPE-Synth): not a validated medical device."
    )
    for ex in examples:
        print(f"  {ex.name:<24} {ex.shows}")
    if failures:
        print(f"\n{failures} request(s) failed", file=sys.stderr)
    return 1 if failures else 0
