"""`avpenet stream-bench`: how many real-time monitoring streams the gateway holds with lag p99 < 1 s.

For each stream count N of a ladder, N clients replay a recording at real time for `--seconds`, all at once
(landmarks streams: the example's audio + face track; video streams: the calm MP4's frames as JPEG plus its
sound, tracked by the gateway). Lag per window is the server's (`lag_s`: completed window → score event
queued) and the client's (last chunk of the window sent → score event received). The ladder stops at the first
N whose client lag p99 reaches 1 s, that drops frames, or whose streams were not all open at one instant; the
largest N before it is reported. Starts its own local stack unless `--url` is given. A mode that scored no
window fails the run (exit 1): `--markdown` is then left as it was, and `--out` too when no mode measured
anything (a wrong `--url`), since zeros alone would read as "the box holds no stream".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_ints, seconds_from

HELP = "Drive N concurrent real-time monitoring streams; report the most streams held with lag p99 < 1 s."
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LAG_LIMIT_S = 1.0
MODES = ("landmarks", "video")
MARKDOWN = Path(__file__).resolve().parent.parent / "docs" / "STREAM_BENCHMARKS.md"
# Figures measured outside a run (earlier runs, A/B comparisons), kept in every report written over MARKDOWN.
NOTES = MARKDOWN.with_name("stream-bench-notes.md")


def recording(mode: str, seconds: float):
    """A `seconds`-long recording for `mode` (landmarks | video), the example looped."""
    from avpenet.features import audio, tracker
    from avpenet.features.track import FaceTrack
    from preprocess_service.stream.replay import Recording

    if mode == "landmarks":
        wave = audio.load_audio((EXAMPLES / "adult-S0003-C02.wav").read_bytes())
        track = FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes())
        loops = int(np.ceil(seconds * contract.FPS / track.n_frames))
        n = track.n_frames * loops
        tile = lambda a: np.concatenate([a] * loops)[: int(seconds * contract.FPS)]  # noqa: E731
        track = FaceTrack(tile(track.landmarks), tile(track.blendshapes), tile(track.face_present),
                          tile(track.head_pose), track.image_size)  # fmt: skip
        step = contract.SAMPLES_PER_FRAME
        wave = np.tile(wave[: (n // loops) * step], loops)[: track.n_frames * step]
        return Recording(wave=wave, track=track)
    data = (EXAMPLES / "neonate-calm-low.mp4").read_bytes()
    frames = list(tracker.iter_video_frames(data))
    loops = int(np.ceil(seconds * contract.FPS / len(frames)))
    wave = audio.load_audio(data)[: len(frames) * 1600]
    n = int(seconds * contract.FPS)
    return Recording(wave=np.tile(wave, loops)[: n * 1600], frames=(frames * loops)[:n])


async def one_stream(url: str, key: str | None, rec, age_group: str) -> dict:
    from preprocess_service.stream.client import open_stream
    from preprocess_service.stream.replay import send_recording

    stream = await open_stream(url, key, rec.start(age_group), keep_bytes=0)  # never resumes: keeps nothing
    opened_at = time.monotonic()
    sent_at: dict[int, float] = {}  # tick -> monotonic time sent
    client_lag: list[float] = []

    def on_event(event: dict) -> None:
        if event["type"] == "score":
            last_tick = int(round(event["end_s"] * contract.FPS)) - 1
            if last_tick in sent_at:
                client_lag.append(time.monotonic() - sent_at[last_tick])

    reader = asyncio.create_task(stream.receive_all(on_event))
    orig = stream.send_audio

    async def stamped(samples, rate=contract.SAMPLE_RATE):  # the tick's audio goes out first
        sent_at[stream.seq["audio"]] = time.monotonic()
        await orig(samples, rate)

    stream.send_audio = stamped
    await send_recording(stream, rec, speed=1.0, fmt="jpeg")
    await reader
    server_lag = [e["lag_s"] for e in stream.events if e["type"] == "score"]
    errors = [e.get("code") for e in stream.events if e["type"] == "error"]
    return {
        "client_lag": client_lag,
        "server_lag": server_lag,
        "errors": errors,
        "close": stream.close_code,
        "span": (opened_at, time.monotonic()),
        "frames_dropped": sum(e.get("count", 0) for e in stream.events if e.get("code") == "frames_dropped"),
    }


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of these (opened, closed) intervals that overlap at one instant."""
    edges = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])  # a close before an open
    held = most = 0
    for _, step in edges:
        held += step
        most = max(most, held)
    return most


async def step(url: str, key: str | None, rec, n: int) -> dict:
    """One step of the ladder: `n` streams at once. A stream that raised (its handshake timed out, the
    gateway refused it, its connection broke) fails the step like an abnormal close; the ladder and its
    report go on."""
    outcomes = await asyncio.gather(
        *(one_stream(url, key, rec, "neonate") for _ in range(n)), return_exceptions=True
    )
    results = [r for r in outcomes if isinstance(r, dict)]
    failed = [r for r in outcomes if not isinstance(r, dict)]
    client = np.concatenate([r["client_lag"] for r in results] or [[]])
    server = np.concatenate([r["server_lag"] for r in results] or [[]])
    errors = [c for r in results for c in r["errors"] if c != "proxy_timeout"]
    if failed:
        errors.append(f"{len(failed)} streams failed ({type(failed[0]).__name__}: {str(failed[0])[:80]})")
    # Streams that opened only once others had ended were not held together (a gateway whose Ray slots were
    # full let 32 of 96 open at a time, and the step looked held): the step fails with the number held.
    together = most_at_once([r["span"] for r in results if "span" in r])
    if together and together < len(results):
        errors.append(f"only {together} of {len(results)} streams were open at once")
    return {
        "streams": n,
        "open_at_once": together,
        "frames_dropped": sum(r.get("frames_dropped", 0) for r in results),
        "windows": int(client.size),
        "client_lag_p50_s": float(np.percentile(client, 50)) if client.size else None,
        "client_lag_p99_s": float(np.percentile(client, 99)) if client.size else None,
        "server_lag_p99_s": float(np.percentile(server, 99)) if server.size else None,
        "errors": sorted(set(errors)),
        "abnormal_closes": sum(r["close"] != 1000 for r in results) + len(failed),
    }


def ladder(url: str, key: str | None, mode: str, seconds: float, counts: list[int]) -> dict:
    rec = recording(mode, seconds)
    rows, held = [], 0
    for n in counts:
        row = asyncio.run(step(url, key, rec, n))
        rows.append(row)
        print(json.dumps({"mode": mode, **row}), flush=True)
        ok = row["client_lag_p99_s"] is not None and row["client_lag_p99_s"] < LAG_LIMIT_S
        if not ok or row["errors"] or row["abnormal_closes"]:
            break
        held = n
    return {"mode": mode, "seconds": seconds, "max_streams_lag_p99_under_1s": held, "steps": rows}


def mode_list(text: str) -> list[str]:
    """--modes: a comma list of MODES (any other name ran as video)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or (unknown := [m for m in modes if m not in MODES]):
        named = f"no mode {', '.join(unknown)}" if modes else "no mode given"
        raise argparse.ArgumentTypeError(f"{named}; the modes are {', '.join(MODES)}")
    return modes


def unmeasured(results: list[dict]) -> list[str]:
    """The modes whose every step measured no window (every stream failed to open or broke first)."""
    return [r["mode"] for r in results if not any(row["windows"] for row in r["steps"])]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="gateway HTTP URL (default: start a local stack)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--modes", type=mode_list, default=",".join(MODES), help="comma list of %(default)s")
    parser.add_argument(
        "--seconds",
        type=seconds_from(contract.WINDOW_SECONDS, "a shorter stream is scored no window"),
        default=30.0,
        help=f"length of each stream, at least one window ({contract.WINDOW_SECONDS:g} s)",
    )
    parser.add_argument(
        "--counts",
        type=positive_ints,
        default="1,2,4,8,12,16,24,32,48,64",
        help="the ladder's stream counts (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, help="write the results as JSON here (not when no mode measured anything)"
    )
    parser.add_argument("--markdown", type=Path, help=f"write the report here (e.g. {MARKDOWN.name})")
    parser.add_argument(
        "--notes",
        type=Path,
        default=NOTES,
        help="Markdown put in the report after its method (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    import secrets

    from preprocess_service.stream.client import ws_url

    load_at_start = os.getloadavg()[0]
    counts, modes = args.counts, args.modes  # lists: argparse applies the types to the defaults too
    if not counts:
        raise ValueError("--counts: give at least one stream count, e.g. 1,2,4")

    def measure(url: str, key: str | None) -> list[dict]:
        return [ladder(ws_url(url), key, m, args.seconds, counts) for m in modes]

    if args.url:
        results = measure(args.url, args.api_key or os.environ.get("AVPENET_API_KEY"))
    else:
        from preprocess_service.serve_config import gateway_deployments
        from preprocess_service.stack import LocalStack

        key = secrets.token_urlsafe(24)
        most = max(counts)  # every stream of the ladder's last step held at once, none refused
        gateway = {"streams": {"max_streams": most, "max_streams_per_key": most}}
        with LocalStack(api_keys=[key], args=gateway, deployments=gateway_deployments(gateway)) as stack:
            results = measure(stack.http_url, key)
    summary = {r["mode"]: r["max_streams_lag_p99_under_1s"] for r in results}
    print(json.dumps({"cpus": os.cpu_count(), "max_streams_lag_p99_under_1s": summary}))
    failed = unmeasured(results)
    if args.out and len(failed) < len(results):  # every mode's steps, a failed mode's errors included
        args.out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    if failed:  # a report (or results) of zeros alone would read as "the box holds no stream"
        errors = (e for r in results if r["mode"] in failed for row in r["steps"] for e in row["errors"])
        first = next(errors, "no window scored")
        kept = [args.out if len(failed) == len(results) else None, args.markdown]
        kept = " and ".join(str(path) for path in kept if path)
        kept = f"; {kept} not written" if kept else ""
        print(
            f"avpenet stream-bench: nothing measured for {', '.join(failed)} ({first}){kept}", file=sys.stderr
        )
        return 1
    if args.markdown:
        notes = args.notes.read_text().strip() if args.notes and args.notes.exists() else ""
        args.markdown.write_text(report(results, " ".join(sys.argv[1:]), load_at_start, notes))
    return 0


def report(results: list[dict], command: str, load_at_start: float, notes: str = "") -> str:
    """The markdown report: the method, `notes`, per mode the most streams held, then every step."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Monitoring streams: how many real-time streams the gateway holds",
        "",
        f"Generated by `avpenet {command}` (loadtests/streams.py) on {when},",
        f"{os.cpu_count()} cores shared by the load generator, Ray Serve, Triton and other work on the box",
        f"(1-minute load average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).",
        "Client lag = last chunk of a window sent → its score event received; server lag = window done →",
        "score event queued. A step fails at client lag p99 ≥ 1 s, an error event, an abnormal close, or",
        "when fewer than all its streams were open at one instant (at once).",
        "",
        *([notes, ""] if notes else []),
        "| mode | most streams with lag p99 < 1 s |",
        "|---|---|",
    ]
    lines += [f"| {r['mode']} | {r['max_streams_lag_p99_under_1s']} |" for r in results]
    lines += [
        "",
        "| mode | streams | at once | windows | client p50 s | client p99 s | server p99 s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["steps"]:
            cells = [row["client_lag_p50_s"], row["client_lag_p99_s"], row["server_lag_p99_s"]]
            fmt = ["-" if v is None else f"{v:.2f}" for v in cells]
            counted = {"frames_dropped": f"frames_dropped ({row.get('frames_dropped', 0)})"}
            errors = ", ".join(counted.get(e, e) for e in row["errors"]) or "-"
            lines.append(
                f"| {r['mode']} | {row['streams']} | {row.get('open_at_once', '-')} | {row['windows']} | "
                f"{' | '.join(fmt)} | {errors} |"
            )
    return "\n".join(lines) + "\n"
