"""How much memory the SDK needs to upload one file, as multiples of the file's size.

`python -m loadtests.sdk_upload_memory --protocol http --mb 200` writes a file of `--mb` MiB, then reads
and sends it with `request_for` and `Client.score` (no retries) to a stand-in gateway in a child process
that reads the body and throws it away (so only the client is measured). It prints the peak of Python's
allocations (tracemalloc) and the rise of this process's peak RSS (Linux: VmHWM, reset before the upload),
which also counts what protobuf and gRPC copy in C. gRPC: at most 60 MiB (the SDK's 64 MiB message limit).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tracemalloc
from pathlib import Path

from avpenet.argtypes import positive_int


def serve(protocol: str) -> None:
    """The stand-in: prints its port, then reads each upload and discards it (HTTP 413 / INVALID_ARGUMENT)."""
    import time

    if protocol == "http":
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                left = int(self.headers["content-length"])
                while left > 0 and (block := self.rfile.read(min(left, 1 << 16))):
                    left -= len(block)
                body = b'{"error":"TooLarge","detail":"discarded","request_id":"r"}'
                self.send_response(413)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
    from concurrent import futures

    import grpc

    def score(_length: int, context) -> None:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "discarded")

    handler = grpc.unary_unary_rpc_method_handler(score, request_deserializer=len)
    server = grpc.server(
        futures.ThreadPoolExecutor(1), options=[("grpc.max_receive_message_length", 1 << 30)]
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("avpenet.v1.Scoring", {"Score": handler}),)
    )
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    server.start()
    time.sleep(3600)


def _kib(field: str) -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0])


def measure(protocol: str, mb: int) -> tuple[float, float]:
    """(tracemalloc peak, peak RSS rise) of one upload, each over the file's size."""
    import subprocess

    import grpc  # noqa: F401  what the SDK imports on its first call, imported before measuring
    import requests  # noqa: F401

    from avpenet.v1 import scoring_pb2, scoring_pb2_grpc  # noqa: F401
    from preprocess_service.client import request_for
    from preprocess_service.sdk import Client, ScoreError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.mp4"
        with path.open("wb") as f:
            for _ in range(mb):
                f.write(bytes(1 << 20))
        cmd = [sys.executable, "-m", "loadtests.sdk_upload_memory", "--serve", protocol]
        stand_in = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        try:
            port = stand_in.stdout.readline().strip()
            target = f"http://127.0.0.1:{port}" if protocol == "http" else f"127.0.0.1:{port}"
            client = Client(target, grpc=protocol == "grpc", retries=0)
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            base = _kib("VmRSS")
            tracemalloc.start()
            try:
                client.score(request_for([path]))
            except ScoreError as exc:
                assert exc.detail == "discarded", exc
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            client.close()
        finally:
            stand_in.kill()
            stand_in.wait()
    return peak / (mb << 20), (_kib("VmHWM") - base) * 1024 / (mb << 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--mb", type=positive_int, default=200, help="file size, MiB")
    parser.add_argument("--serve", choices=("http", "grpc"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.protocol == "grpc" and args.mb > 60:
        parser.error("--mb: at most 60 over gRPC (the SDK's message limit is 64 MiB)")
    traced, rss = measure(args.protocol, args.mb)
    print(
        f"{args.protocol} {args.mb} MiB: Python allocations peak {traced:.2f}x the file, peak RSS +{rss:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
