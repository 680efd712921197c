"""The gateway's own CPU per scoring request, without Ray, the proxy or the load generator in the figure.

`python -m loadtests.gateway_cpu --kind landmarks_3s --requests 200 --concurrency 16` builds the bench's clip,
starts a real Triton on the committed repository and, in this one process, parses the multipart body and
runs `ScoringService.score` (decode, features, the Triton call, the answer) for every request, `concurrency`
at a time, as a Gateway replica does. It prints this process's CPU time per request (Triton's own processes
are not counted) and the score: the number a change to the gateway's request path moves, steady on a shared
box where the bench's throughput is not.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from avpenet.argtypes import positive_int
from loadtests import clips

BOUNDARY = "gateway-cpu-boundary"


def form(parts: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body of the bench's parts (and age_group), and its Content-Type."""
    b = BOUNDARY.encode()
    body = b"".join(
        b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: %s\r\n\r\n%s\r\n'
        % (b, field.encode(), name.encode(), ctype.encode(), data)
        for field, name, data, ctype in parts
    )
    body += b'--%s\r\nContent-Disposition: form-data; name="age_group"\r\n\r\nneonate\r\n--%s--\r\n' % (b, b)
    return body, f"multipart/form-data; boundary={BOUNDARY}"


async def measure(
    body: bytes, content_type: str, triton_url: str, requests: int, concurrency: int
) -> tuple[float, list[float]]:
    """(this process's CPU ms per request, the scores) over `requests` after 4 warm-up requests."""
    from preprocess_service.multipart import parse_score_form
    from preprocess_service.service import ScoringService
    from preprocess_service.settings import GatewaySettings

    settings = GatewaySettings(
        triton_url=triton_url, triton_timeout_s=120, triton_timeout_per_window_s=5, api_keys=("local",)
    )
    service = ScoringService(settings)
    scores: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            request = await asyncio.to_thread(parse_score_form, body, content_type, "gateway-cpu")
            scores.append((await service.score(request, protocol="http")).score)

    try:
        for _ in range(4):
            await one()
        scores.clear()
        start = time.process_time()
        await asyncio.gather(*(one() for _ in range(requests)))
        return (time.process_time() - start) / requests * 1000.0, scores
    finally:
        await service.close()


def main(argv: list[str] | None = None) -> int:
    from ensemble.server import TritonServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="landmarks_3s", choices=sorted(clips.KINDS))
    parser.add_argument("--requests", type=positive_int, default=200)
    parser.add_argument("--concurrency", type=positive_int, default=16)
    parser.add_argument("--repo", type=Path, default=None, help="model repository (default: committed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="avpenet-gateway-cpu-") as tmp:  # synthetic clips, read once
        work = Path(tmp)
        files = clips.build(work, [args.kind])[args.kind]
        parts = [
            (f, n, (work / n).read_bytes(), clips.CONTENT_TYPES[Path(n).suffix]) for f, n in files.items()
        ]
    body, ctype = form(parts)
    with TritonServer(**({"repo": args.repo} if args.repo else {})) as triton:
        ms, scores = asyncio.run(measure(body, ctype, triton.grpc_url, args.requests, args.concurrency))
    shown = f"{args.requests} requests, {args.concurrency} at a time"
    print(f"{args.kind}: gateway CPU {ms:.1f} ms per request ({shown}); score {scores[0]!r}")
    print(f"distinct scores over the requests: {len(set(scores))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
