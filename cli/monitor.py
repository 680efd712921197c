"""`avpenet monitor FILE`: replay a clip or a long recording as a live bedside stream and print its events.

An MP4/MOV/WebM/MKV streams its frames (the gateway tracks them) and its sound; an audio file streams sound
only; `--landmarks NPZ` next to an audio file streams privacy mode (landmarks, no pixels); a lone .npz streams
landmarks only. Real time by default, `--speed 4` four times faster, `--speed 0` as fast as the gateway
takes it.
One line per event; with `--json` one JSON object per line with a `type` field (score, trend, alert, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from avpenet import contract
from avpenet.argtypes import count

HELP = "Replay a recording as a live monitoring stream (WebSocket /v1/stream) and print one event per line."
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".m4v")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from preprocess_service.client import DEFAULT_HTTP, KEY_ENV

    parser.add_argument("file", type=Path, help="a clip or recording: video, audio, or a face-track .npz")
    parser.add_argument(
        "--landmarks", type=Path, help="face-track .npz streamed with an audio FILE (privacy mode)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--speed", type=_speed, default=1.0, help="1 = real time, 4 = 4x faster, 0 = no pacing"
    )
    parser.add_argument("--url", default=DEFAULT_HTTP, help=f"gateway HTTP URL (default {DEFAULT_HTTP})")
    parser.add_argument("--api-key", default=None, help=f"API key (default: ${KEY_ENV})")
    parser.add_argument(
        "--age-group",
        default="unknown",
        choices=contract.AGE_GROUPS,
        help="give it: unknown is scored less well",
    )
    parser.add_argument(
        "--scale", default="avpenet", choices=("avpenet", "nips"), help="the threshold's scale"
    )
    parser.add_argument("--threshold", type=float, default=6.0, help="alert above this (on --scale)")
    parser.add_argument("--windows", type=int, default=5, help="... for this many consecutive windows")
    parser.add_argument("--baseline-s", type=float, default=0.0, help="first seconds: baseline, no alerts")
    parser.add_argument(
        "--handling", action="append", default=[], metavar="START:END", type=_span,
        help="declare handling (alerts suppressed) from START to END seconds of the recording; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--reconnects", type=count, default=3,
        help="resume the stream this many times when the link drops (default 3; 0: end with the link)",
    )  # fmt: skip


def _speed(text: str) -> float:
    value = float(text) if text.replace(".", "", 1).isdigit() else -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (no pacing) or a positive factor such as 1 or 4")
    return value


def _span(text: str) -> tuple[float, float]:
    """START:END seconds, START before END."""
    try:
        start, end = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give START:END in seconds, e.g. 30:90") from None
    if not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"{text!r}: START must be 0 or more and before END")
    return start, end


def load_recording(path: Path, landmarks: Path | None = None):
    """The Recording a device would stream from this file (decoded and sampled as clip scoring does, except
    that a file whose audio and video start apart is streamed as decoded, not lined up: avclip._line_up)."""
    from avpenet.features import audio, tracker
    from avpenet.features.track import FaceTrack
    from preprocess_service.stream.replay import Recording, VideoFrames

    data = path.read_bytes()
    if path.suffix.lower() == ".npz":
        return Recording(track=FaceTrack.load_npz(data))
    track = FaceTrack.load_npz(landmarks.read_bytes()) if landmarks else None
    wave = audio.load_audio(data, name=path.name, max_seconds=24 * 3600)
    if path.suffix.lower() in VIDEO_SUFFIXES and track is None:
        frames = VideoFrames(data, tracker.VideoLimits(max_seconds=24 * 3600))  # decoded as sent, not held
        return Recording(wave=wave, frames=frames or None)
    return Recording(wave=wave, track=track)


def describe(event: dict) -> str:
    """One readable line per event."""
    kind = event["type"]
    if kind == "score":
        flags = "".join(f" [{f}]" for f in ("suppressed", "baseline") if event.get(f))
        iv = event["interval_90"]
        return (
            f"{event['start_s']:6.1f}-{event['end_s']:5.1f}s score {event['score']:5.2f} ({event['level']}) "
            f"90% {iv['low']:.1f}-{iv['high']:.1f} lag {event.get('lag_s', 0):.2f}s{flags}"
        )
    if kind == "trend":
        return f"{'':14}trend {event['trend']:5.2f}  slope {event['slope_per_min']:+.2f}/min"
    if kind == "alert":
        level = f"{event['scale']} {event['scaled']:.2f} > {event['threshold']:.2f}"
        return f"{event['at_s']:13.1f}s ALERT {level} since {event['since_s']:.0f}s"
    if kind in ("alert_cleared", "signal_lost", "signal_back"):
        return f"{event['at_s']:13.1f}s {kind} {event.get('modality', '')}".rstrip()
    if kind == "error":
        return f"{'':14}error {event.get('code')}: {event.get('detail')}"
    rest = {k: v for k, v in event.items() if k not in ("type", "config", "seq")}
    return f"{'':14}{kind} {json.dumps(rest)}"


def stream_config(args: argparse.Namespace) -> dict:
    """The stream's alert settings, checked as the gateway checks them at the stream's start (its own
    model), so a threshold the scale cannot reach or a zero window count is refused before the recording is
    read or a stream opened; ValueError names the flag."""
    from pydantic import ValidationError

    from preprocess_service.stream.protocol import StreamConfig

    config = {
        "scale": args.scale,
        "threshold": args.threshold,
        "windows": args.windows,
        "baseline_s": args.baseline_s,
    }
    try:
        StreamConfig(**config)
    except ValidationError as exc:
        reasons = [
            (f"--{e['loc'][0].replace('_', '-')} {e['input']}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        ]
        raise ValueError("; ".join(reasons)) from None
    return config


def run(args: argparse.Namespace) -> int:
    from preprocess_service.client import KEY_ENV, check_target
    from preprocess_service.stream.client import ws_url
    from preprocess_service.stream.replay import replay

    check_target(args.url, grpc=False, grpc_flag=False)  # a stream is WebSocket over HTTP only
    config = stream_config(args)
    rec = load_recording(args.file, args.landmarks)

    def show(event: dict) -> None:
        print(json.dumps(event) if args.json else describe(event), flush=True)

    key = args.api_key or os.environ.get(KEY_ENV)
    try:
        stream = asyncio.run(
            replay(ws_url(args.url), key, rec, age_group=args.age_group, speed=args.speed, config=config,
                   handling=args.handling, on_event=show, fmt="jpeg", reconnects=args.reconnects)
        )  # fmt: skip
    except (ConnectionError, OSError) as exc:
        print(f"avpenet monitor: {exc}", file=sys.stderr)
        return 1
    return 0 if stream.close_code == 1000 else 1


def demo_session(http_url: str, api_key: str, clip: Path) -> list[str]:
    """`make demo`'s monitoring session: `clip` looped twice as a video stream at 4x real time, alert after
    3 windows above 6; the event lines as `avpenet monitor` prints them."""
    import numpy as np

    from preprocess_service.stream.client import ws_url
    from preprocess_service.stream.replay import Recording, replay

    rec = load_recording(clip)
    step = contract.SAMPLE_RATE // contract.FPS
    wave = None if rec.wave is None else np.tile(rec.wave[: rec.n_frames * step], 2)
    looped = Recording(wave=wave, frames=list(rec.frames or []) * 2 or None)  # a 4-s clip: held
    lines: list[str] = []
    config = {"threshold": 6.0, "windows": 3, "trend_every": 3}
    asyncio.run(
        replay(ws_url(http_url), api_key, looped, age_group="neonate", speed=4.0, config=config,
               on_event=lambda e: lines.append(describe(e)), fmt="jpeg")
    )  # fmt: skip
    return lines
