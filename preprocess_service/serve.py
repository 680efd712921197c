"""`avpenet serve`: Triton + the Ray Serve gateway on this machine, until Ctrl-C; then both stop cleanly.

SIGINT or SIGTERM stops everything and removes Ray's temp dir. When Ray's processes outlive the signal (any
signal to this process alone: `docker stop`, systemd, `kill PID`; Ctrl-C to the terminal's group), the calls
in flight are answered first (Serve drains, then Triton stops); a SIGTERM to the whole group reaches Ray too,
and Triton and its stubs stop first, then Ray. Triton also dies with this process if it is killed outright
(see ensemble.server). While running, Triton is probed with a real inference every few seconds and restarted
when it hangs (LocalStack.supervise).

Ray's workers write their output, the gateway's audit lines (one per request) among it, to this command's
stderr (ray_node.SERVICE_LOG_ENV): journald or `docker logs` keep them after the stop removes Ray's temp dir.
Ray's own Python components log warnings only and its C++ processes errors only (QUIET_RAY_ENV): the
autoscaler's status every 5 s was 288 lines an idle minute; the C++ warnings, 18 records over a start and a
stop with nothing wrong, were all Ray's routine.

Ray's gRPC proxy binds all interfaces, so with gRPC on the gateway is reachable from other hosts and API keys
are mandatory: without AVPENET_API_KEYS / --api-key-file a random key is made for this session and printed
once (like a notebook token). `--no-grpc` on loopback runs without keys.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from avpenet.argtypes import port
from preprocess_service.sdk_target import GRPC_PORT, HTTP_PORT

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SUPERVISE_PERIOD_S = 3.0  # a probe inference this often; two failures in a row restart Triton
HELP = "Start Triton + the Ray Serve gateway locally (HTTP and gRPC), print the URLs, stop on Ctrl-C."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: %(default)s)")
    parser.add_argument(
        "--http-port", type=port, default=HTTP_PORT, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--grpc-port", type=port, default=GRPC_PORT, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument("--no-grpc", action="store_true", help="HTTP only (loopback then needs no API key)")
    parser.add_argument(
        "--repo", type=Path, default=None, help="Triton model repository (default: the bundled one)"
    )
    parser.add_argument("--config", type=Path, default=None, help="Serve config (default: the bundled one)")
    parser.add_argument("--api-key-file", type=Path, default=None, help="file of API keys, one per line")


def check_inputs(args: argparse.Namespace, gateway_args: dict) -> None:
    """What the user named, read before Triton or Ray starts: the key file as the gateway reads it
    (preprocess_service.auth), the Serve config as the stack deploys it, the model repository. An OSError or
    ValueError naming it (avpenet's one line and exit 2), not Serve failing three times in Ray's log."""
    import yaml

    from ensemble import DEFAULT_REPOSITORY
    from ensemble.server import check_repository
    from preprocess_service.auth import ApiKeys
    from preprocess_service.serve_config import CONFIG_PATH, load_config, localize

    if args.api_key_file:
        from preprocess_service.stack import KEYS_ENV

        try:  # as the gateway reads them: the file's keys and those of AVPENET_API_KEYS together
            keys = ApiKeys(os.environ.get(KEYS_ENV, "").split(","), key_file=args.api_key_file)
        except UnicodeDecodeError:
            raise ValueError(f"--api-key-file {args.api_key_file} is not text (one key per line)") from None
        if not keys.configured:
            raise ValueError(
                f"--api-key-file {args.api_key_file} holds no key (nor does {KEYS_ENV}): every request "
                "would be refused"
            )
    path = args.config or CONFIG_PATH
    try:
        config = load_config(path)
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {path} is not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise ValueError(f"--config {path} is not a Serve config (no `applications` list)")
    grpc_port = None if args.no_grpc else args.grpc_port
    localize(
        config,
        host=args.host,
        http_port=args.http_port,
        grpc_port=grpc_port,
        triton_url="",
        args=gateway_args,
    )
    check_repository(args.repo or DEFAULT_REPOSITORY)


def run(args: argparse.Namespace) -> int:
    from preprocess_service.client import KEY_ENV
    from preprocess_service.stack import CONFIG_PATH, KEYS_ENV, LocalStack, ray_untouched

    gateway_args = {}
    keys: list[str] = []
    if args.api_key_file:
        gateway_args["api_keys_file"] = str(args.api_key_file.resolve())
    elif not os.environ.get(KEYS_ENV) and not (
        args.no_grpc and args.host in ("127.0.0.1", "localhost", "::1")
    ):
        keys = [secrets.token_urlsafe(24)]
    check_inputs(args, gateway_args)  # before anything starts
    stack = LocalStack(
        repo=args.repo,
        host=args.host,
        http_port=args.http_port,
        grpc_port=None if args.no_grpc else args.grpc_port,
        api_keys=keys,
        args=gateway_args,
        config_path=args.config or CONFIG_PATH,
        logs_to_stderr=True,  # the audit trail outlives the stop (journald, docker logs), not Ray's temp dir
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        print("starting Triton and the Ray Serve gateway (about 30 s)...", file=sys.stderr, flush=True)
        stack.start()
        # ray.init replaced our SIGTERM handler with its own (sys.exit inside the handler, then an abort while
        # Ray's processes die): put ours back, so a signal only sets `stop` and `finally` stops in order.
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: stop.set())
        print(
            f"HTTP    {stack.http_url}/v1/score   (docs {stack.http_url}/docs, "
            f"metrics {stack.http_url}/metrics)"
        )
        if not args.no_grpc:
            print(f"gRPC    {stack.grpc_target}   (avpenet.v1.Scoring; health + reflection)")
        print(f"Triton  gRPC {stack.triton.grpc_url}   metrics {stack.triton.metrics_url}")
        if keys:
            print(f"API key for this session: {keys[0]}   (export {KEY_ENV}=<key> for avpenet score)")
        print("Ctrl-C stops both.", flush=True)
        while not stop.wait(SUPERVISE_PERIOD_S):
            restarts = stack.triton_restarts
            if not stack.supervise():
                print("avpenet serve: Triton failed a probe inference", file=sys.stderr, flush=True)
            if stack.triton_restarts > restarts:
                print("avpenet serve: Triton restarted", file=sys.stderr, flush=True)
            if stack.triton_gave_up:  # exit 1 (everything stopped below): whatever runs this sees it fail
                print("avpenet serve: Triton could not be started again; stopping", file=sys.stderr)
                return 1
        return 0
    except Exception as exc:  # start failures: say why, exit non-zero
        print(f"avpenet serve: {exc}", file=sys.stderr)
        return 1
    finally:
        # A signal to this process alone, or a SIGINT to the group, leaves Ray serving: drain the calls in
        # flight. A SIGTERM to the group reached Ray's processes too: stop at once, without Serve's 30 s wait
        # on a dying controller.
        graceful = ray_untouched()
        drain = " (answering the calls in flight first: at most one request budget)" if graceful else ""
        print(f"stopping{drain}...", file=sys.stderr, flush=True)
        stack.stop(graceful=graceful)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
