"""How much memory the gateway holds for one upload, as multiples of the uploaded file's size, per stage.

`python -m loadtests.gateway_upload_memory --mb 64 --kind wav --protocol http` writes a file of about `--mb`
MiB (loadtests/upload_media.py; `--rate`, `--channels`, `--bits` set a WAV's or FLAC's format) and what the
gateway receives for it, then, in a fresh process, drives the gateway's own request path in-process with no
Ray and no Triton: a `ScoringService` (its watchdog not started) behind `http_routes.score`, fed the
multipart body in 64 KiB chunks through the ASGI receive of a starlette Request as the proxy does; or behind
`GrpcMethods.Score`, given the serialized message as bytes as Ray's gRPC proxy hands it (held, as the
proxy's call holds it, until Score returns). The request runs
through the body read, the form parse (or the protobuf parse and `ScoreRequest.from_proto`) and the
extract step's decode, and is stopped where Triton would be called (answered 503 "stopped before Triton").
It prints, per stage and overall, the peak of Python's allocations (tracemalloc) and the peak RSS rise
(Linux VmHWM, reset per stage), each above the process before the request and over the file's size. RSS also
counts what Python does not trace (protobuf's parsed message, libsndfile's and FFmpeg's buffers).

`--baseline DIR` runs the same probe (this file) against the code of another checkout `DIR` (its .venv and
generated avpenet/v1/scoring_pb2* in place) on the same files, and prints both side by side with the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from avpenet.argtypes import positive_int

CHUNK = 64 << 10  # what one ASGI http.request message carries
WARM_BYTES = 2 << 20  # a small upload of the same kind first: imports, the tracker's model, thread pools
RUNNER = (
    "import runpy, sys; root, path = sys.argv[1:3]; sys.path.insert(0, root); sys.argv = sys.argv[2:]; "
    "runpy.run_path(path, run_name='__main__')"
)
STOPPED = "stopped before Triton"


def _kib(field: str) -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0])


class Meter:
    """Peaks per stage above the start: Python's traced allocations and VmHWM, both reset as stages change."""

    def __init__(self) -> None:
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed warm-up pages would hide the request's RSS
        tracemalloc.start()
        self.traced0 = tracemalloc.get_traced_memory()[0]
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.rss0 = _kib("VmRSS")
        self.stage = "before"
        self.peaks: dict[str, list[int]] = {}

    def switch(self, stage: str) -> None:
        """Close the current stage's peaks (a stage entered twice keeps its higher) and start `stage`'s."""
        traced = tracemalloc.get_traced_memory()[1] - self.traced0
        rss = (_kib("VmHWM") - self.rss0) * 1024
        old = self.peaks.get(self.stage, [0, 0])
        self.peaks[self.stage] = [max(old[0], traced), max(old[1], rss)]
        tracemalloc.reset_peak()
        Path("/proc/self/clear_refs").write_text("5")
        self.stage = stage

    def stop(self) -> dict[str, list[int]]:
        self.switch("after")
        tracemalloc.stop()
        overall = [max(p[0] for p in self.peaks.values()), max(p[1] for p in self.peaks.values())]
        return {**self.peaks, "overall": overall}


METER: list[Meter] = []  # the running meter, while the measured request runs


def switch(stage: str) -> None:
    if METER:
        METER[0].switch(stage)


def _staged(stage: str, fn):
    """`fn`, its calls measured as `stage` while a meter runs (sync or async, as `fn` is)."""
    import functools
    import inspect

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args, **kwargs):
            switch(stage)
            try:
                return await fn(*args, **kwargs)
            finally:
                switch("between stages")

        return run_async

    @functools.wraps(fn)
    def run(*args, **kwargs):
        switch(stage)
        try:
            return fn(*args, **kwargs)
        finally:
            switch("between stages")

    return run


def _gateway(max_upload: int):
    """A ScoringService answering 503 where it would call Triton, its stages measured (module globals the
    routes look up at each call are wrapped)."""
    from avpenet.features import audio, avclip, tracker, windows  # noqa: F401  imported before measuring
    from preprocess_service import grpc_wire, http_routes
    from preprocess_service.errors import TritonUnavailable
    from preprocess_service.protocol import ScoreRequest
    from preprocess_service.service import ScoringService
    from preprocess_service.settings import GatewaySettings, Limits

    limits = Limits(max_upload_bytes=max_upload)
    settings = GatewaySettings(
        triton_url="127.0.0.1:1", api_keys=("probe",), limits=limits, request_timeout_s=600
    )
    service = ScoringService(settings)
    service.watchdog.ensure_started = lambda: None  # no Triton to probe

    async def stop(*args, **kwargs):
        raise TritonUnavailable(STOPPED, 1)

    service._infer_pinned = stop
    http_routes.read_body = _staged("read body", http_routes.read_body)
    http_routes.parse_score_form = _staged("parse form", http_routes.parse_score_form)
    for name in ("parse", "parse_views"):  # a baseline's Score may call `parse` only (before parse_views)
        if hasattr(grpc_wire, name):
            setattr(grpc_wire, name, _staged("parse message", getattr(grpc_wire, name)))
    from_proto = _staged("from_proto", ScoreRequest.from_proto)
    ScoreRequest.from_proto = classmethod(lambda cls, *args, **kwargs: from_proto(*args, **kwargs))
    audio.load_audio = _staged("decode", audio.load_audio)
    avclip.decode_clip = _staged("decode", avclip.decode_clip)
    return service


async def _post(service, body: Path, content_type: str) -> tuple[int, str]:
    """The body as the proxy streams it to `http_routes.score`: (status, error detail)."""
    from starlette.requests import Request

    from preprocess_service import http_routes

    size = body.stat().st_size
    with body.open("rb") as f:

        async def receive() -> dict:
            chunk = f.read(CHUNK)
            return {"type": "http.request", "body": chunk, "more_body": f.tell() < size}

        headers = [(b"content-type", content_type.encode()), (b"content-length", str(size).encode())]
        headers.append((b"authorization", b"Bearer probe"))
        scope = {"type": "http", "method": "POST", "path": "/v1/score", "query_string": b""}
        response = await http_routes.score(service, Request({**scope, "headers": headers}, receive))
    return response.status_code, json.loads(response.body)["detail"]


class _Context:
    """What GrpcMethods.Score asks of grpc's servicer context."""

    code = details = None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", "Bearer probe")]

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata) -> None:
        pass


async def _call(service, message: Path) -> tuple[str, str]:
    """The message's bytes to `GrpcMethods.Score`, held until it returns: (status code, details)."""
    from preprocess_service.grpc_methods import GrpcMethods

    methods = GrpcMethods()
    methods.service = service
    context = _Context()
    switch("receive")
    raw = message.read_bytes()
    switch("between stages")
    await methods.Score(raw, context)
    del raw
    return str(context.code), str(context.details)


def measure(protocol: str, request: Path, warm: Path) -> dict:
    """In this (fresh) process: one warm-up request, then the measured one. Peaks in bytes, per stage."""
    import asyncio

    import preprocess_service

    service = _gateway(max_upload=request.stat().st_size + (1 << 20))

    async def send(path: Path) -> tuple[object, str]:
        if protocol == "grpc":
            return await _call(service, path)
        with path.open("rb") as f:  # the multipart boundary is the body's first line, less its "--"
            content_type = "multipart/form-data; boundary=" + f.readline()[2:].strip().decode()
        return await _post(service, path, content_type)

    async def both() -> dict:
        await send(warm)
        METER.append(Meter())
        try:
            status, detail = await send(request)
        finally:
            peaks = METER.pop().stop()
        await service.close()
        code = str(Path(preprocess_service.__file__).resolve().parents[1])
        return {"status": status, "detail": detail, "peaks": peaks, "code": code}

    return asyncio.run(both())


def probe(tree: Path, protocol: str, request: Path, warm: Path) -> dict:
    """`measure` in a fresh process on the code of checkout `tree` (this file run there by path)."""
    cmd = [sys.executable, "-c", RUNNER, str(tree), str(Path(__file__).resolve())]
    cmd += ["--measure", protocol, str(request), str(warm)]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        raise SystemExit(f"the probe failed in {tree}:\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1])
    if Path(result["code"]) != tree.resolve():
        raise SystemExit(f"the probe meant for {tree} ran the code in {result['code']}")
    if STOPPED not in result["detail"]:  # refused before its features were built: not the measured path
        raise SystemExit(f"the request in {tree} was answered {result['status']}: {result['detail']}")
    return result


def report(title: str, size: int, now: dict, base: dict | None) -> list[str]:
    """The table: per stage (then overall) each peak over `size`; beside it the baseline's, and now/base."""
    head = f"{'stage':<14}{'allocations':>12}{'RSS rise':>10}"
    if base is not None:
        ratio = f"{'base':>8}{'now/base':>10}"
        head = f"{'stage':<14}{'allocations':>12}{ratio}{'RSS rise':>12}{ratio}"
    lines = [title, head]
    for stage, (traced, rss) in now["peaks"].items():
        if stage in ("before", "after", "between stages"):
            continue
        if base is None:
            lines.append(f"{stage:<14}{traced / size:>11.2f}x{rss / size:>9.2f}x")
            continue
        b_traced, b_rss = base["peaks"].get(stage, [0, 0])
        lines.append(
            f"{stage:<14}{traced / size:>11.2f}x{b_traced / size:>7.2f}x{traced / max(b_traced, 1):>10.2f}"
            f"{rss / size:>11.2f}x{b_rss / size:>7.2f}x{rss / max(b_rss, 1):>10.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    # --measure (protocol, request, warm-up request) is the probe's run in a fresh process, on a baseline's
    # code too: read before importing upload_media, whose options that code may lack.
    inner = argparse.ArgumentParser(add_help=False)
    inner.add_argument("--measure", nargs=3)
    if measuring := inner.parse_known_args(argv)[0].measure:
        protocol, request, warm = measuring
        print(json.dumps(measure(protocol, Path(request), Path(warm))))
        return 0
    from loadtests.upload_media import add_sound_options, sound_format, write_media, write_request

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=positive_int, default=64, help="upload size, MiB")
    parser.add_argument("--kind", choices=("wav", "flac", "mp4"), default="wav")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--baseline", type=Path, help="a checkout to measure beside this one (same files)")
    add_sound_options(parser)  # --rate, --channels, --bits: in --help too
    args = parser.parse_args(argv)
    sound = {"rate": args.rate, "channels": args.channels, "bits": args.bits}
    with tempfile.TemporaryDirectory(prefix="avpenet-upload-memory-") as tmp:
        work = Path(tmp)
        for name, size in (("upload", args.mb << 20), ("warm", WARM_BYTES)):
            write_media(work / f"{name}.{args.kind}", args.kind, size, **sound)
            write_request(work / f"{name}.{args.kind}", args.kind, args.protocol, work / f"{name}.request")
        size = (work / f"upload.{args.kind}").stat().st_size
        sent = (work / "upload.request").stat().st_size
        trees = [Path(__file__).resolve().parents[1], *([args.baseline.resolve()] if args.baseline else [])]
        runs = [probe(tree, args.protocol, work / "upload.request", work / "warm.request") for tree in trees]
    what = "body" if args.protocol == "http" else "message"
    title = (
        f"{args.protocol} {args.kind}: file {size / (1 << 20):.1f} MiB{sound_format(args.kind, **sound)}, "
        f"{what} {sent / (1 << 20):.1f} MiB; "
        "peaks above the process before the request, as multiples of the file"
        + (f" (base: {trees[-1]})" if args.baseline else "")
    )
    print("\n".join(report(title, size, runs[0], runs[1] if args.baseline else None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
