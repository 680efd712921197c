"""`avpenet loadtest`: start the local stack, run locust headless against it, print a table and PASS/FAIL.

The SLOs are the alert thresholds of monitoring/rules/avpenet-alerts.yml: p99 end-to-end latency per request
kind (each locust row held to its kind's bound, as the alert holds the gateway's histogram) and error ratio <=
1% (tests/deploy/test_monitoring_slo.py keeps the two in step). Locust runs in its own process: importing
locust (gevent monkey-patching) after Ray/ssl in one interpreter recurses.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from avpenet.argtypes import positive_int, positive_number, share
from loadtests import clips
from preprocess_service import telemetry

HELP = "Load-test the gateway (HTTP + gRPC locust users, a realistic clip mix) and check the SLOs."
# p99 per request kind of the gateway's stage histogram (telemetry.KINDS): alert AvpenetP99LatencyHigh's
SLO_P99_MS = {"light": 2000.0, "light_long": 10000.0, "video": 10000.0, "video_long": 30000.0}
SLO_ERROR_RATIO = 0.01
# locust's --run-time: whole seconds, or hours/minutes/seconds as 1h20m, 90s (locust.util.timespan; not
# imported here, see above)
TIMESPAN = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")


def run_time(text: str) -> str:
    """A locust run time above 0 (`--duration`), refused when parsed: locust refused a bad one only after the
    stack had started, and read a zero one as no limit (a run without end)."""
    spec = text.strip()
    match = TIMESPAN.fullmatch(spec)
    seconds = int(spec) if spec.isdigit() else 0
    if match and not spec.isdigit():
        hours, minutes, secs = (int(v or 0) for v in match.group("h", "m", "s"))
        seconds = 3600 * hours + 60 * minutes + secs
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run time above 0 (e.g. 90, 30s, 10m, 1h30m)")
    return spec


LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
API_KEY = "loadtest-key"


@dataclass(frozen=True)
class Row:
    """One line of locust's *_stats.csv."""

    name: str
    requests: int
    failures: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    rps: float

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def read_stats(path: Path) -> list[Row]:
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            name = r["Name"] if r["Type"] else "ALL"
            rows.append(
                Row(
                    name,
                    int(r["Request Count"]),
                    int(r["Failure Count"]),
                    float(r["Median Response Time"] or 0),
                    float(r["95%"] or 0) if r["95%"] != "N/A" else 0.0,
                    float(r["99%"] or 0) if r["99%"] != "N/A" else 0.0,
                    float(r["Requests/s"] or 0),
                )
            )
    return rows


def gateway_kind(name: str) -> str | None:
    """The gateway's request kind of a locust row ("http av_3s" -> "video"); None if it names no clip kind."""
    clip = clips.KINDS.get(name.rsplit(" ", 1)[-1])
    if clip is None:
        return None
    return telemetry.request_kind(clip.has_video, clip.windows)


def verdict(rows: list[Row], p99_ms: float | None = None, error_ratio: float = SLO_ERROR_RATIO) -> list[str]:
    """The SLOs `rows` (locust's, the aggregate last) miss; empty = pass. Each request row's p99 is held to
    its kind's SLO_P99_MS (a row naming no clip kind to the strictest), or the aggregate's to `p99_ms` when
    given (one bound for every kind). No requests at all is a miss, not a pass."""
    *requests, total = rows
    misses = []
    if total.requests == 0:
        misses.append("no request completed")
    if p99_ms is not None:
        if total.p99_ms > p99_ms:
            misses.append(f"p99 {total.p99_ms:.0f} ms > {p99_ms:.0f} ms")
    else:
        for row in requests:
            kind = gateway_kind(row.name)
            bound = SLO_P99_MS[kind] if kind else min(SLO_P99_MS.values())
            if row.requests and row.p99_ms > bound:
                misses.append(f"{row.name} ({kind or 'no kind'}) p99 {row.p99_ms:.0f} ms > {bound:.0f} ms")
    if total.error_ratio > error_ratio:
        misses.append(f"error ratio {total.error_ratio:.2%} > {error_ratio:.2%}")
    return misses


def table(rows: list[Row]) -> str:
    lines = [f"{'request':<22}{'count':>7}{'fail':>6}{'rps':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    for r in rows:
        lines.append(
            f"{r.name:<22}{r.requests:>7}{r.failures:>6}{r.rps:>8.2f}{r.median_ms:>9.0f}{r.p95_ms:>9.0f}{r.p99_ms:>9.0f}"
        )
    return "\n".join(lines)


def run_locust(
    *,
    http_url: str,
    grpc_target: str | None,
    clip_dir: Path,
    csv_prefix: Path,
    users: int,
    spawn_rate: float,
    duration: str,
    mix: str,
    api_key: str,
    protocols: list[str],
) -> int:
    """locust --headless in a child process; returns its exit code (1 also when any request failed)."""
    classes = [{"http": "HttpScorer", "grpc": "GrpcScorer"}[p] for p in protocols]
    env = dict(os.environ)
    env.update(
        AVPENET_LOADTEST_CLIPS=str(clip_dir),
        AVPENET_LOADTEST_MIX=mix,
        AVPENET_API_KEY=api_key,
        AVPENET_GRPC_TARGET=grpc_target or "",
        PYTHONPATH=os.pathsep.join([str(LOCUSTFILE.parent.parent), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    )
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", http_url,
        "-u", str(users), "-r", str(spawn_rate), "-t", duration, "--csv", str(csv_prefix),
        "--only-summary", "--stop-timeout", "30", "--loglevel", "WARNING", *classes,
    ]  # fmt: skip
    return subprocess.run(command, env=env, stdin=subprocess.DEVNULL).returncode


@contextlib.contextmanager
def stack_or_url(args: argparse.Namespace) -> Iterator[tuple[str, str | None, str]]:
    """(http_url, grpc_target, api_key): a given gateway, or a local stack started (and stopped) here."""
    if args.url:
        yield args.url, args.grpc_target, os.environ.get("AVPENET_API_KEY", "")
        return
    from preprocess_service.stack import LocalStack

    print("starting the local stack (Triton + Ray Serve) ...", file=sys.stderr, flush=True)
    with LocalStack(api_keys=[API_KEY], max_replicas=args.max_replicas) as stack:
        yield stack.http_url, stack.grpc_target, API_KEY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--users", type=positive_int, default=4, help="concurrent locust users (default: %(default)s)"
    )
    parser.add_argument("--spawn-rate", type=positive_number, default=4.0, help="users started per second")
    parser.add_argument(
        "--duration",
        type=run_time,
        default="30s",
        help="locust run time, e.g. 30s, 10m (default: %(default)s)",
    )
    parser.add_argument(
        "--mix", choices=sorted(clips.MIXES), default="ward", help="request mix (default: ward)"
    )
    parser.add_argument("--protocols", default="http,grpc", help="comma list of http, grpc (default: both)")
    parser.add_argument(
        "--slo-p99-ms",
        type=positive_number,
        default=None,
        help="one p99 bound for all (default: per kind, SLO_P99_MS)",
    )
    parser.add_argument("--slo-error-ratio", type=share, default=SLO_ERROR_RATIO)
    parser.add_argument("--out", type=Path, default=None, help="folder for locust CSVs (default: a temp dir)")
    parser.add_argument("--url", default=None, help="test a running gateway instead of starting one")
    parser.add_argument("--grpc-target", default=None, help="host:port of that gateway's gRPC proxy")
    parser.add_argument(
        "--max-replicas", type=positive_int, default=1, help="Serve replica cap for the local stack"
    )


def run(args: argparse.Namespace) -> int:
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if unknown := sorted(set(protocols) - {"http", "grpc"}):
        raise ValueError(f"--protocols: no protocol {', '.join(unknown)}; give http, grpc or both")
    if args.url and "grpc" in protocols and not args.grpc_target:  # before the clips are built
        raise ValueError("--grpc-target is needed for gRPC against --url (or --protocols http)")
    out = args.out or Path(tempfile.mkdtemp(prefix="avpenet-loadtest-"))
    out.mkdir(parents=True, exist_ok=True)
    clip_dir = out / "clips"
    clips.build(clip_dir, clips.kinds_of([args.mix]))
    with stack_or_url(args) as (http_url, grpc_target, api_key):
        print(
            f"locust: {args.users} users, {args.duration}, mix {args.mix}, {'+'.join(protocols)}: {http_url}"
        )
        run_locust(
            http_url=http_url,
            grpc_target=grpc_target,
            clip_dir=clip_dir,
            csv_prefix=out / "locust",
            users=args.users,
            spawn_rate=args.spawn_rate,
            duration=args.duration,
            mix=args.mix,
            api_key=api_key,
            protocols=protocols,
        )
    stats = out / "locust_stats.csv"
    if not stats.exists():
        print("avpenet loadtest: locust wrote no statistics", file=sys.stderr)
        return 1
    rows = read_stats(stats)
    print(table(rows))
    misses = verdict(rows, args.slo_p99_ms, args.slo_error_ratio)
    per_kind = ", ".join(f"{k} {v:.0f}" for k, v in SLO_P99_MS.items())
    bound = f"{args.slo_p99_ms:.0f} ms" if args.slo_p99_ms is not None else f"per kind ({per_kind} ms)"
    slo = f"SLO p99 <= {bound}, errors <= {args.slo_error_ratio:.1%}"
    print(f"{'FAIL' if misses else 'PASS'} ({slo}){': ' + '; '.join(misses) if misses else ''}")
    print(f"CSV: {out}/locust_*.csv")
    return 1 if misses else 0
