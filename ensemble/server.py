"""`avpenet triton`: the real tritonserver (from the nvidia-pytriton wheel) on loopback, as a context manager.

The wheel ships only the Python backend, and its stub must import this venv's numpy/onnxruntime against this
venv's libpython; getting the backend directory and environment right is the whole point of this module, so
tests, the gateway's local mode and the demo all start Triton through `TritonServer`. Which binary and
backends it runs (the wheel's, or an installed Triton such as the NGC image's): ensemble/triton_install.py.

Why one module over 300 lines: the launcher's process handling (ports, readiness, log, stop)
and its `avpenet triton` command are one lifecycle.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from avpenet.argtypes import count, port, positive_int
from ensemble import DEFAULT_REPOSITORY, shm_regions, triton_install
from ensemble.ports import HOST, free_ports
from ensemble.tracing import otel_args

HELP = "Run the real Triton Inference Server on the model repository (loopback only)."

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 60
# The Python backend grows each stub's shared-memory region in these steps; one 64-window waveform batch is
# 12 MB, so 1 MB steps (the default) would mean a dozen remaps on the first big request.
SHM_DEFAULT_BYTES = 4 * 1024 * 1024
SHM_GROWTH_BYTES = 16 * 1024 * 1024


_RUNNING: weakref.WeakSet[TritonServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """A server left running by a crashed test or an unhandled exception must not outlive this interpreter."""
    for server in list(_RUNNING):
        server.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started Triton dies, however it dies.

    Without it a launcher killed by SIGKILL, or aborted inside Ray's signal handling, left tritonserver and
    its stubs running with parent 1. Linux ties this to the starting *thread*: start Triton from a thread that
    lives as long as the server (the main thread, as `avpenet serve`, the tests and the supervisor do).
    """
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class TritonStartError(RuntimeError):
    """tritonserver exited or never became ready; the message carries the tail of its log."""


def check_repository(repo: str | os.PathLike) -> None:
    """FileNotFoundError, NotADirectoryError or ValueError naming a model repository Triton could not serve,
    before anything starts (`avpenet triton`, `avpenet serve`: one line and exit 2)."""
    repo = Path(repo)
    if not repo.exists():
        raise FileNotFoundError(errno.ENOENT, "no such model repository", str(repo))
    if not repo.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a model repository is a folder, not a file", str(repo))
    if not any(repo.glob("*/config.pbtxt")):
        raise ValueError(f"{repo} holds no model; build it with `avpenet export`")


# glibc gives each allocating thread its own malloc arena (up to 8 per core) and seldom returns their freed
# pages: with many short-lived worker threads (gRPC, ORT, mediapipe, asyncio.to_thread) RSS climbs for hours.
# Two arenas keep it flat (docs/RELIABILITY.md, Soak). Set for Triton, its stubs and the Ray processes.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "2"}


def stub_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment in which the Python-backend stub imports this venv's packages with its own libpython.

    Without LD_LIBRARY_PATH the stub may bind the system libpython against another stdlib, and
    `multiprocessing` then fails with "'_thread.RLock' object has no attribute '_recursion_count'".
    """
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")]).rstrip(os.pathsep)
    libs = [str(sysconfig.get_config_var("LIBDIR") or ""), *triton_install.library_dirs()]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    env.setdefault("OMP_NUM_THREADS", "1")  # ORT sizes its own pools; stray OpenMP pools only oversubscribe
    for name, value in ALLOCATOR_ENV.items():  # an operator's own value wins
        env.setdefault(name, value)
    return env


class TritonServer:
    """The real tritonserver bound to loopback; `with TritonServer() as triton: triton.grpc_url ...`.

    Ports given as 0 are picked free at start. `model_control="explicit"` starts with every model loaded
    (`--load-model=*`) and allows load/unload over the API, which is how a new version is swapped in.
    """

    def __init__(
        self,
        repo: str | Path = DEFAULT_REPOSITORY,
        *,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        model_control: str = "none",
        log_verbose: int = 0,
        model_config_name: str | None = None,
        extra_args: Sequence[str] = (),
        echo_log: bool = False,
        ready_timeout_s: float = READY_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if model_control not in ("none", "explicit", "poll"):
            raise ValueError(f"model_control must be none, explicit or poll; got {model_control!r}")
        self.repo = Path(repo).resolve()
        self._requested_ports = (http_port, grpc_port, metrics_port)
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.model_control = model_control
        self.log_verbose = log_verbose
        self.model_config_name = model_config_name
        self.extra_args = tuple(extra_args)
        self.echo_log = echo_log
        self.ready_timeout_s = ready_timeout_s
        self.env = dict(env or {})  # over this process's environment at every start (e.g. a private TMPDIR)
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._backends: Path | None = None  # --backend-directory (triton_install.backend_directory)
        self._log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._reader: threading.Thread | None = None
        self._shm_prefix: str | None = None  # this launch's shared-memory regions (ensemble/shm_regions.py)

    # --- addresses ---------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """host:port for `tritonclient.http` (which takes no scheme)."""
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port for `tritonclient.grpc`."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint."""
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def shm_prefix(self) -> str | None:
        """The name prefix of this launch's shared-memory regions (shm_regions.py); None when stopped."""
        return self._shm_prefix

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def log_tail(self) -> str:
        return "\n".join(self._log_tail)

    # --- lifecycle ----------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        assert self._workdir is not None
        args = [
            str(triton_install.tritonserver_binary()),
            f"--model-repository={self.repo}",
            f"--backend-directory={self._backends}",
            f"--http-address={HOST}",
            f"--http-port={self.http_port}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={HOST}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=10",
            f"--log-verbose={self.log_verbose}",
            f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
            f"--model-control-mode={self.model_control}",
        ]
        if triton_install.installed_home() is None:  # the wheel: CPU only, no GPU metrics or pinned copies
            args += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
        if self._shm_prefix is not None:
            args.append(shm_regions.backend_arg(self._shm_prefix))
        if self.model_control == "explicit":
            args.append("--load-model=*")
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        return [*args, *self.extra_args]

    def start(self) -> TritonServer:
        if self._process is not None:
            raise RuntimeError("this TritonServer is already running")
        if not any(self.repo.glob("*/config.pbtxt")):
            raise TritonStartError(f"{self.repo} holds no model; build it with `avpenet export`")
        shm_regions.remove_orphans()  # left by launchers killed before they could stop their server
        self._new_workdir()
        attempts = 3  # a port picked free can be taken before Triton binds it (models load first)
        for attempt in range(attempts):
            picked = iter(free_ports(3))  # distinct: HTTP, gRPC and metrics may not share a port
            self.http_port, self.grpc_port, self.metrics_port = (
                p or next(picked) for p in self._requested_ports
            )
            try:
                self._launch()
                return self
            except TritonStartError as exc:
                clash = "address already in use" in str(exc).lower() or "failed to start" in str(exc).lower()
                self.stop()
                if not clash or attempt == attempts - 1 or all(self._requested_ports):
                    raise
                self._new_workdir()
            except BaseException:  # the launch itself failed (no binary, fork refused): no temp dir is left
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _new_workdir(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="avpenet-triton-"))
        try:
            self._backends = triton_install.backend_directory(self._workdir / "backends")
        except triton_install.TritonInstallError as exc:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            raise TritonStartError(str(exc)) from None

    def _launch(self) -> None:
        self._log_tail.clear()
        self._shm_prefix = shm_regions.new_prefix()
        self._process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=stub_environment({**os.environ, **self.env}),
            cwd=self._workdir,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop Triton in order
            preexec_fn=_die_with_parent,
        )
        _RUNNING.add(self)
        self._reader = threading.Thread(target=self._pump_log, name="tritonserver-log", daemon=True)
        self._reader.start()
        self._wait_ready()

    def _pump_log(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._log_tail.append(line)
            if self.echo_log:
                print(line, file=sys.stderr, flush=True)

    def is_ready(self) -> bool:
        """Ready, and its metrics port open too: Triton starts the metrics service last, after
        /v2/health/ready already answers, so a caller reading metrics at once was refused (a flaky test)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                if response.status != 200:
                    return False
            with socket.create_connection((HOST, self.metrics_port), timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                if self._reader:
                    self._reader.join(timeout=2)
                raise TritonStartError(
                    f"tritonserver exited with code {self._process.returncode} before it was ready; "
                    f"log tail:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.1)
        raise TritonStartError(
            f"tritonserver not ready after {self.ready_timeout_s:.0f} s; log tail:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL of its process group after `timeout_s`.

        A Triton whose stub hangs in `execute` never finishes draining: the supervisor passes 0 (kill now).
        """
        process, self._process = self._process, None
        _RUNNING.discard(self)
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=STOP_TIMEOUT_S)
            # Stubs are Triton's children in its session; none may outlive it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            code = process.returncode
            if self._reader:
                self._reader.join(timeout=2)
        if self._shm_prefix is not None:  # a killed server leaves its regions (and their tensors) in RAM
            shm_regions.remove(self._shm_prefix)
            self._shm_prefix = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def restart(self, stop_timeout_s: float = 0.0) -> TritonServer:
        """Stop (SIGKILL after `stop_timeout_s`: a hung stub never drains) and start again on the same ports,
        repository and flags, so every client reconnects to the same address."""
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        self.stop(timeout_s=stop_timeout_s)
        self._requested_ports = ports
        return self.start()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: %(default)s)"
    )
    parser.add_argument(
        "--http-port", type=port, default=8000, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--grpc-port", type=port, default=8001, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics-port", type=port, default=8002, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--model-control-mode",
        choices=("none", "explicit", "poll"),
        default="none",
        help="explicit: all models loaded at start, load/unload allowed over the API (default: %(default)s)",
    )
    parser.add_argument(
        "--model-config-name",
        default=None,
        help="read <model>/configs/NAME.pbtxt instead of config.pbtxt (e.g. gpu)",
    )
    parser.add_argument(
        "--log-verbose", type=count, default=0, help="Triton's verbose log level, 0 (off) or more"
    )
    parser.add_argument(
        "--trace-endpoint",
        default=None,
        help="export Triton's OpenTelemetry spans to this OTLP/HTTP endpoint (host:port/v1/traces)",
    )
    parser.add_argument("--trace-rate", type=positive_int, default=1000, help="trace 1 request in N")


def run(args: argparse.Namespace) -> int:
    check_repository(args.repo)  # a missing or empty one: one line and exit 2, before Triton starts
    server = TritonServer(
        repo=args.repo,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        model_control=args.model_control_mode,
        log_verbose=args.log_verbose,
        model_config_name=args.model_config_name,
        extra_args=otel_args(args.trace_endpoint, rate=args.trace_rate) if args.trace_endpoint else (),
        echo_log=True,
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except TritonStartError as exc:
            print(f"avpenet triton: {exc}", file=sys.stderr)
            return 1
        print(
            f"Triton ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}"
            f"  (pid {server.pid}; Ctrl-C stops it)",
            file=sys.stderr,
            flush=True,
        )
        while not stop.is_set():
            if server._process is None or server._process.poll() is not None:
                print("avpenet triton: tritonserver exited unexpectedly", file=sys.stderr)
                return 1
            stop.wait(0.5)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
