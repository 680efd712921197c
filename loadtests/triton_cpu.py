"""Triton's own CPU per request, against the same four graphs chained in one process, per intra-op setting.

`python -m loadtests.triton_cpu --threads 0,1 --rounds 2` copies the model repository once per setting of the
parts' `intra_op_threads` (0 = ONNX Runtime's default, one thread per physical core), starts a real Triton on
each copy in turn and sends requests of `--windows` windows (one by default: a 3-s clip; 58: a 60-s clip,
the long mix's), `concurrency` clients each waiting for its answer as the gateway's callers do, then reads
the CPU time of Triton's whole process tree (server and Python-backend stubs) per request. The same
requests through `ensemble.ort_chain.OrtChain` in this process, with the same thread count, give the
graphs' own cost: the difference is what the gRPC call, the ensemble scheduler and the stubs'
shared-memory hops add. Settings alternate round by round, so a shared box's other load falls on both
alike. It answers "how many threads should each part's session have" on the machine it runs on, and what
a clip's graphs cost on one core before any serving is added (the chain column).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import counts, positive_int, positive_ints

WARM_UP = 5


def one_window(seed: int = 0) -> dict[str, np.ndarray]:
    """An ensemble request of one 3-s window (`clip_request(1)`)."""
    return clip_request(1, seed)


def clip_request(windows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """An ensemble request of a clip of `windows` windows, laid out as the gateway sends it: noise for sound,
    random face features, every frame present."""
    from avpenet.features import audio

    rng = np.random.default_rng(seed)
    inputs = contract.zero_inputs(contract.ENSEMBLE, windows)
    samples = (windows - 1) * contract.HOP_SAMPLES + contract.WINDOW_SAMPLES
    wave = (0.1 * rng.standard_normal(samples)).astype(np.float32)
    inputs[contract.AUDIO.name], inputs[contract.WINDOW_GAIN.name] = audio.clip_rows(wave, windows)
    shape = inputs[contract.VISUAL_FEATURES.name].shape
    inputs[contract.VISUAL_FEATURES.name] = rng.standard_normal(shape).astype(np.float32)
    inputs[contract.FRAME_MASK.name][:] = 1.0
    inputs[contract.AUDIO_PRESENT.name][:] = 1.0
    return inputs


def _tree_cpu_s(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # a stub that exited between listing and reading
            continue
        total += times.user + times.system
    return total


def chain_cpu_ms(repo: Path, threads: int, inputs: dict[str, np.ndarray], requests: int) -> float:
    """CPU ms per request of the four graphs chained in this process (no Triton), one request at a time."""
    from ensemble.ort_chain import OrtChain

    chain = OrtChain(repo, threads=threads or None)
    for _ in range(WARM_UP):
        chain(inputs)
    start = time.process_time()
    for _ in range(requests):
        chain(inputs)
    return (time.process_time() - start) / requests * 1000.0


def triton_cpu_ms(
    url: str, pid: int, inputs: dict[str, np.ndarray], requests: int, concurrency: int
) -> tuple[float, float]:
    """(Triton process-tree CPU ms per request, requests per second) with `concurrency` blocking clients."""
    import tritonclient.grpc as grpcclient

    from ensemble.client import infer_inputs

    outputs = [grpcclient.InferRequestedOutput(s.name) for s in contract.REQUIRED_OUTPUTS]  # every version
    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]

    def send(client, n: int) -> None:
        for _ in range(n):
            tensors = infer_inputs(grpcclient, contract.ENSEMBLE, inputs)
            client.infer(contract.ENSEMBLE.name, tensors, outputs=outputs)

    for client in clients:
        send(client, WARM_UP)
    each = max(1, requests // concurrency)
    workers = [threading.Thread(target=send, args=(client, each)) for client in clients]
    cpu0, wall0 = _tree_cpu_s(pid), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done = each * concurrency
    cpu_ms = (_tree_cpu_s(pid) - cpu0) / done * 1000.0
    for client in clients:
        client.close()
    return cpu_ms, done / (time.perf_counter() - wall0)


def repository_with_threads(source: Path, threads: int, into: Path) -> Path:
    """A copy of `source` whose parts' configs ask for `threads` intra-op threads (configs rewritten)."""
    from ensemble.batching import load_plan
    from ensemble.configs import write_configs

    repo = into / f"threads-{threads}"
    shutil.copytree(source, repo, ignore=shutil.ignore_patterns("__pycache__"))
    write_configs(repo, dataclasses.replace(load_plan(), intra_op_threads=threads))
    return repo


def measure(
    source: Path, settings: list[int], concurrency: list[int], requests: int, rounds: int, windows: int = 1
) -> list:
    """Rows (threads, round, chain ms, {concurrency: (triton ms, req/s)}), settings alternated per round."""
    from ensemble.server import TritonServer

    inputs = clip_request(windows)
    rows = []
    with tempfile.TemporaryDirectory(prefix="avpenet-triton-cpu-") as work:
        repos = {t: repository_with_threads(source, t, Path(work)) for t in settings}
        for round_ in range(rounds):
            for threads in settings:
                chain = chain_cpu_ms(repos[threads], threads, inputs, requests)
                with TritonServer(repo=repos[threads]) as triton:
                    assert triton.pid is not None
                    url, pid = triton.grpc_url, triton.pid
                    served = {c: triton_cpu_ms(url, pid, inputs, requests, c) for c in concurrency}
                rows.append((threads, round_, chain, served))
    return rows


def report(rows: list, concurrency: list[int]) -> str:
    head = ["intra-op threads", "chain in one process ms"]
    for c in concurrency:
        head += [f"Triton c={c} ms", f"Triton c={c} req/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for threads in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == threads]
        cells = [f"{threads}{' (ORT default)' if threads == 0 else ''}"]
        cells.append(f"{statistics.median(r[2] for r in mine):.1f}")
        for c in concurrency:
            cells.append(f"{statistics.median(r[3][c][0] for r in mine):.1f}")
            cells.append(f"{statistics.median(r[3][c][1] for r in mine):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def window_count(text: str) -> int:
    """Windows per request: 1 to the ensemble's largest batch (a request is one batch)."""
    n = positive_int(text)
    if n > contract.MAX_BATCH_SIZE:
        limit = contract.MAX_BATCH_SIZE
        raise argparse.ArgumentTypeError(f"{text!r} windows: a request holds at most {limit}")
    return n


def main(argv: list[str] | None = None) -> int:
    from ensemble import DEFAULT_REPOSITORY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument(
        "--threads", type=counts, default="0,1", help="comma list of intra_op_threads settings"
    )
    parser.add_argument(
        "--concurrency", type=positive_ints, default="1,8", help="comma list of concurrent clients"
    )
    parser.add_argument(
        "--requests", type=positive_int, default=200, help="per setting, round and concurrency"
    )
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument(
        "--windows",
        type=window_count,
        default=1,
        help=f"windows per request: 1 = a 3-s clip, 58 = a 60-s one (at most {contract.MAX_BATCH_SIZE})",
    )
    args = parser.parse_args(argv)
    # lists: argparse applies the types to the string defaults too
    rows = measure(args.repo, args.threads, args.concurrency, args.requests, args.rounds, args.windows)
    what = "one-window request" if args.windows == 1 else f"request of {args.windows} windows"
    print(f"CPU ms per {what}, median of {args.rounds} alternated rounds of {args.requests}:")
    print(report(rows, args.concurrency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
