"""`avpenet score FILE...`: score clips against a running gateway over HTTP (default) or gRPC with the SDK
(sdk.py: retries under an Idempotency-Key, typed results); prints a table, or FHIR / HL7 v2 documents.
`--deliver hl7v2` (the form field `deliver=hl7v2`) also has the gateway send each result to its interface
engine over MLLP: the SDK sends a failed delivery again while it may pass, and the outcome of every round is
shown (a line under the row, the JSON's `hl7_delivery`/`hl7_deliveries`, stderr beside documents).

The part a file is sent as follows its extension: .npz → landmarks, WAV/FLAC/OGG/AIFF/CAF/W64/MP3/AAC/AMR
→ audio, a video → clip. `score_http` / `score_grpc` are single-attempt library forms (the demo and the load
tests call them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from avpenet import contract
from avpenet.argtypes import count
from preprocess_service import hl7_outcome, pinning
from preprocess_service.protocol import MediaPart, ScoreRequest, ScoreResponse
from preprocess_service.sdk import FORMATS, Client, ScoreError, ScoreResult, TargetError
from preprocess_service.sdk_target import GRPC_EXAMPLE, HTTP_EXAMPLE, target_problem

__all__ = ["ScoreError", "request_for", "score_grpc", "score_http"]

HELP = "Score clips (video, audio, landmarks .npz) against a running gateway; prints a table."
DEFAULT_HTTP, DEFAULT_GRPC = HTTP_EXAMPLE, GRPC_EXAMPLE  # `avpenet serve`'s ports on loopback
KEY_ENV = "AVPENET_API_KEY"
STOPS = ("UNREACHABLE", "TIMEOUT", "REDIRECT_REFUSED")  # the next clips would fare no better: stop the run
DELIVERIES = ("hl7v2",)  # what --deliver (the form field `deliver`) may name
NO_SUBJECT = (
    "--deliver hl7v2 needs --subject, the patient's FHIR reference (e.g. Patient/123) that the message's "
    "PID-3 names: the interface engine files the result under it"
)
NO_OUTCOME = "no delivery outcome in the answer"
ROW_INDENT, TABLE_WIDTH = 34, 110  # a note under a row is indented past file and proto; delivery lines cut
AUDIO_EXT = {".wav", ".flac", ".ogg", ".aif", ".aiff", ".aifc", ".caf", ".w64", ".mp3", ".aac", ".amr"}


def part_for(path: Path) -> str:
    ext = path.suffix.lower()
    if ext == ".npz":
        return "landmarks"
    if ext in AUDIO_EXT:
        return "audio"
    return "clip"


def request_for(paths: list[Path], age_group: str = "unknown", **refs: str | None) -> ScoreRequest:
    """One request from files, e.g. [clip.mp4] or [audio.wav, face.npz] (one file per part)."""
    check_files(paths)
    parts = {part_for(path): MediaPart(data=path.read_bytes(), filename=path.name) for path in paths}
    return ScoreRequest(**parts, age_group=age_group, **refs)


def check_files(paths: list[Path]) -> None:
    """ValueError naming a file that is missing, or two files that would be the same part of one request."""
    parts: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a folder: give the clips in it, e.g. {path / '*.wav'}")
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        if (part := part_for(path)) in parts:
            raise ValueError(f"{parts[part].name} and {path.name} would both be the {part} part (one each)")
        parts[part] = path


def score_http(
    url: str, request: ScoreRequest, *, api_key: str | None = None, fhir: bool = False, timeout_s: float = 120
) -> ScoreResponse | dict:
    """POST /v1/score once (no retries); a ScoreResponse, or the Observation dict when `fhir`. Raises
    ScoreError, a bad `url` too (TargetError, also a ValueError), and `deliver_hl7` without `subject_ref`
    (RequestError, also a ValueError). The SDK (`preprocess_service.sdk.Client`) is the retrying, all-formats
    form."""
    if problem := target_problem(url, False, "score_grpc"):  # this caller's gRPC is score_grpc, not grpc=True
        raise TargetError(url, problem)
    client = Client(url, api_key=api_key, retries=0, timeout_s=timeout_s)
    result = client.score(request, fmt="fhir-observation" if fhir else "json")
    return result.fhir() if fhir else result.score


def score_grpc(
    target: str, request: ScoreRequest, *, api_key: str | None = None, timeout_s: float = 120, channel=None
) -> ScoreResponse:
    """avpenet.v1.Scoring/Score once (no retries) on an insecure channel (or `channel`). Raises ScoreError,
    a bad `target` too (TargetError, also a ValueError), and `deliver_hl7` without `subject_ref`
    (RequestError, also a ValueError)."""
    if channel is None and (problem := target_problem(target, True, None, "score_http")):  # a URL: score_http
        raise TargetError(target, problem)
    client = Client(target, api_key=api_key, grpc=True, retries=0, timeout_s=timeout_s, channel=channel)
    try:
        return client.score(request).score
    finally:
        if channel is None:
            client.close()


# --- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="clips (.mp4/.mov/.webm/.mkv), audio files, .npz")
    parser.add_argument("--grpc", action="store_true", help="use gRPC instead of HTTP")
    parser.add_argument(
        "--url", help=f"gateway HTTP URL or gRPC host:port (default {DEFAULT_HTTP} / {DEFAULT_GRPC})"
    )
    parser.add_argument(
        "--age-group",
        default="unknown",
        choices=contract.AGE_GROUPS,
        help="give it: unknown is scored less well",
    )
    parser.add_argument("--api-key", default=None, help=f"API key (default: ${KEY_ENV})")
    parser.add_argument(
        "--together", action="store_true", help="send all files as ONE request (e.g. wav + npz)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON answers instead of a table")
    parser.add_argument(
        "--format",
        default="json",
        choices=FORMATS,
        help="print FHIR R4 or HL7 v2 documents instead of a table",
    )
    parser.add_argument("--recorded-at", help="when the clips were recorded (ISO 8601 with a zone)")
    parser.add_argument("--subject", help="the patient's FHIR reference, e.g. Patient/123 (for --deliver)")
    parser.add_argument(
        "--pin",
        default="",
        help="version pins NAME=VERSION,... (e.g. avpenet=1); a part is pinned to the version it serves, "
        "which every answer names (--json: model_versions)",
    )
    parser.add_argument(
        "--deliver",
        choices=DELIVERIES,
        help="also have the gateway send each result to its interface engine (MLLP), sent again while a "
        "failed delivery may pass; the outcome of each round is shown",
    )
    parser.add_argument(
        "--retries", type=count, default=3, help="retries on 429/503/504, timeouts, dropped links (safe)"
    )


def check_target(target: str, grpc: bool, *, grpc_flag: bool = True) -> None:
    """ValueError naming what is wrong with --url (the SDK's rule, sdk_target.py); `grpc_flag`: the command
    has --grpc (say so)."""
    if problem := target_problem(target, grpc, "--grpc" if grpc_flag else None):
        raise ValueError(f"--url {target}: {problem}")


Row = tuple[str, str, ScoreResponse | ScoreError, float, tuple[str, ...] | None]  # the last: HL7 rounds


def format_table(rows: list[Row]) -> str:
    """Fixed-width table: file, protocol, score, level, interval, windows, weights, latency (or error); under
    a row, the age group read from the clip and each HL7 delivery round's outcome (None: not asked for)."""
    head = f"{'file':<28} {'proto':<5} {'score':>5}  {'level':<8} {'90% interval':<12} {'win':>3}  "
    head += f"{'audio/visual':<12} {'ms':>6}"
    lines = [head, "-" * len(head)]
    for name, proto, result, ms, deliveries in rows:
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
        if (read := result.age_read) is not None and read.contradicts_age_group:  # a mistyped --age-group?
            lines.append(
                f"{'':<{ROW_INDENT}} clip reads as {read.group} (P(adult) {read.adult_probability:.2f}), "
                f"not {result.age_group}: check --age-group"
            )
        elif read is not None:  # sent without --age-group: say what it was scored as
            lines.append(
                f"{'':<{ROW_INDENT}} age read from the clip as {read.group} "
                f"(P(adult) {read.adult_probability:.2f}); send --age-group"
            )
        if deliveries is not None:
            lines.extend(delivery_lines(deliveries))
    return "\n".join(lines)


def delivery_lines(deliveries: tuple[str, ...]) -> list[str]:
    """One line per delivery round under a row (`HL7 delivery 2/3: ...` when there were several), each cut to
    the table's width, which the usual outcomes fit (--json has them whole)."""
    if len(deliveries) <= 1:
        texts = [f"HL7 delivery: {deliveries[0] if deliveries else NO_OUTCOME}"]
    else:
        n = len(deliveries)
        texts = [f"HL7 delivery {i}/{n}: {outcome}" for i, outcome in enumerate(deliveries, 1)]
    room = TABLE_WIDTH - ROW_INDENT - 1
    return [f"{'':<{ROW_INDENT}} {text if len(text) <= room else text[: room - 1] + '…'}" for text in texts]


def delivered(result: ScoreResult) -> bool:
    """Whether the last delivery round reached the interface engine (AA/CA)."""
    return hl7_outcome.code(result.hl7_delivery) in hl7_outcome.DELIVERED


def as_json(result: ScoreResult, deliver: bool) -> str:
    """The JSON answer; with --deliver, plus the SDK's delivery outcome: the last, every round's, how many."""
    if not deliver:
        return result.score.model_dump_json(indent=2)
    extra = {"hl7_delivery": result.hl7_delivery, "hl7_deliveries": list(result.hl7_deliveries)}
    document = result.score.model_dump(mode="json") | extra | {"delivery_rounds": result.delivery_rounds}
    return json.dumps(document, indent=2, ensure_ascii=False)


def show(
    args: argparse.Namespace, name: str, answer: ScoreResult | ScoreError, ms: float, rows: list[Row]
) -> bool:
    """Print one answer, or keep it as a table row; True when it failed: refused, or (--deliver) scored but
    not delivered, which stderr says in every format (beside documents, a delivered outcome too)."""
    proto = "grpc" if args.grpc else "http"
    if isinstance(answer, ScoreError):
        rows.append((name, proto, answer, ms, None))
        print(f"{name}: error {answer.status}: {answer.detail}", file=sys.stderr)  # in every format
        return True
    if answer.document is not None:
        hl7 = args.format == "hl7v2"  # its segments end with CR, the last one too: one line each
        print(answer.document.replace("\r", "\n").rstrip("\n") if hl7 else answer.document)
    else:
        rows.append((name, proto, answer.score, ms, answer.hl7_deliveries if args.deliver else None))
        if args.json:
            print(as_json(answer, bool(args.deliver)))
    if not args.deliver:
        return False
    ok = delivered(answer)
    if not ok or answer.document is not None:
        n = answer.delivery_rounds
        rounds = f" (round {n}/{n})" if n > 1 else ""
        what = "HL7 delivery" if ok else "HL7 not delivered"
        print(f"{name}: {what}: {answer.hl7_delivery or NO_OUTCOME}{rounds}", file=sys.stderr)
    return not ok


def stops(exc: ScoreError) -> bool:
    """Whether the next clips would fare no better: the gateway unreachable, too slow or elsewhere, or it has
    no interface engine for --deliver (DeliveryNotConfigured, which HTTP and gRPC name alike)."""
    return exc.status in STOPS or exc.error == "DeliveryNotConfigured"


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get(KEY_ENV)
    groups = [args.files] if args.together else [[f] for f in args.files]
    target = args.url or (DEFAULT_GRPC if args.grpc else DEFAULT_HTTP)
    check_target(target, args.grpc)
    try:  # everything a user can get wrong is said before the first clip is sent
        pins = pinning.parse(args.pin)
        if args.deliver and not args.subject:
            raise ValueError(NO_SUBJECT)
        for paths in groups:
            check_files(paths)
    except ValueError as exc:
        print(f"avpenet score: {exc}", file=sys.stderr)
        return 2
    client = Client(target, api_key=api_key, grpc=args.grpc, retries=args.retries)
    rows: list[Row] = []
    failed, stopped, answered = 0, None, 0
    try:
        for paths in groups:
            request = request_for(
                paths, args.age_group, subject_ref=args.subject, recorded_at=args.recorded_at
            )
            request = request.model_copy(update={"model_versions": pins, "deliver_hl7": bool(args.deliver)})
            t0 = time.perf_counter()
            try:
                answer = client.score(request, fmt=args.format)
            except ScoreError as exc:
                if stops(exc):
                    stopped = exc
                    break
                answer = exc
            answered += 1  # a row, or a document (FHIR, HL7 v2) that makes none
            ms = (time.perf_counter() - t0) * 1000
            failed += show(args, "+".join(p.name for p in paths), answer, ms, rows)
    finally:
        client.close()
    if args.format == "json" and not args.json and (rows or stopped is None):
        print(format_table(rows))  # what was scored before a stop is shown too
    if stopped is not None:
        n, unsent = len(groups), len(groups) - answered - 1  # the one that stopped it was sent, unanswered
        where = (
            f"stopped after {answered} of {n} clips{f' ({unsent} not sent)' if unsent else ''}: "
            if n > 1
            else ""
        )
        print(f"avpenet score: {where}{stop_message(stopped, target)}", file=sys.stderr)
        return 1
    return 1 if failed else 0


def stop_message(stopped: ScoreError, target: str) -> str:
    """Why the run stopped (`stops`): a redirect the SDK refused is a wrong --url, not a gateway
    that is down."""
    if stopped.status == "REDIRECT_REFUSED":
        return f"the gateway URL {target} redirects the upload elsewhere ({stopped.detail}); fix --url"
    if stopped.status not in STOPS:  # no interface engine: every clip would be refused before scoring
        return f"the gateway at {target} refused --deliver ({stopped.status}: {stopped.detail})"
    why = "cannot reach" if stopped.status == "UNREACHABLE" else "no answer in time from"
    return f"{why} the gateway at {target} ({stopped.detail}); is `avpenet serve` up?"
