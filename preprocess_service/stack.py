"""The whole stack on one machine: real Triton + Ray Serve deploying serve_config.yaml, all on loopback.

`avpenet serve`, the demo, the load tests and the end-to-end tests start it the same way:

    with LocalStack(api_keys=["k"]) as stack:
        stack.http_url, stack.grpc_target, stack.triton.grpc_url

Ray on a small box (docs/ARCHITECTURE.md, Platform notes): `num_cpus` from the machine (at most 2), no
dashboard, a private temp dir, objects spilled to RAM, not disk (ray_node.py),
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, explicit ports (Ray's default 8000 is also Triton's), replicas capped to
what fits. The config file is deployed the way KubeRay deploys serveConfigV2, with local overrides only.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from ensemble import ports
from ensemble.server import ALLOCATOR_ENV
from preprocess_service import grpc_wire
from preprocess_service.ray_node import QUIET_RAY_ENV, SERVICE_LOG_ENV, SLOW_START_ENV, RayNode
from preprocess_service.serve_config import CONFIG_PATH, load_config, localize

HOST = ports.HOST  # loopback only
APP_NAME = "avpenet"
DEPLOY_TIMEOUT_S = 180.0
KEYS_ENV = "AVPENET_API_KEYS"
log = logging.getLogger("avpenet.stack")
BIND_FAILURE = "Failed to bind to address"  # what both of Serve's proxies (uvicorn, grpc) raise
SIGNAL_SETTLE_S = 1.0  # after a stop signal: long enough for Ray's processes to show they got it too


def _stop_ray(graceful: bool) -> None:
    """Serve's app (graceful: the calls in flight are answered first), then the local Ray node, all of it.

    `serve.shutdown()` alone stops Serve's proxy with its connections open: six 60-s uploads in flight all
    lost their connection without an answer (docs/RELIABILITY.md). Deleting the app first drains it while
    the proxy still relays: its replicas finish their requests (bounded by Serve's graceful-shutdown timeout).
    Then the node goes, Serve's actors in it: `serve.shutdown()` added only a line that read like a fault
    ("Task ServeController.graceful_shutdown failed ... will be retried": its controller kills itself while
    the driver's call is in flight). After a signal to the whole process group Ray's processes are already
    going down: `avpenet serve` then skips the drain (`ray_untouched`).
    """
    import ray

    if not ray.is_initialized():
        return
    try:
        if graceful and _ray_processes_alive():
            from ray import serve

            serve.delete(APP_NAME)  # blocks until its replicas have drained and gone
    except Exception as exc:  # noqa: BLE001 (shutting down: go on to ray.shutdown whatever happened)
        log.warning("Serve shutdown failed: %s", exc)
    finally:
        ray.shutdown()
        # forget the stopped controller, as serve.shutdown did (the next node's first job id is the same)
        from ray.serve import context

        context._set_global_client(None)


def _ray_processes_alive() -> bool:
    """Every process this driver's Ray node started (raylet, GCS, dashboard, log monitor) still runs."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    groups = getattr(node, "all_processes", {}).values() if node is not None else ()
    return all(p.process is None or p.process.poll() is None for procs in groups for p in procs)


def ray_untouched(settle_s: float = SIGNAL_SETTLE_S) -> bool:
    """Whether a stop signal left the local Ray node running, so a graceful stop can drain it.

    A SIGTERM to the whole process group (`kill -- -PGID`) reaches Ray's processes too, and they begin to
    exit within moments: give them `settle_s` to show it. A signal to this process alone (`docker stop`,
    systemd, `kill PID`) leaves them serving the calls in flight, and so does a SIGINT to the group (Ctrl-C in
    a terminal), which they outlive; a graceful stop then answers those calls before it goes (measured: of six
    60-s uploads in flight at a SIGTERM to the process, one got a 503 and five lost their connection when
    `avpenet serve` stopped Ray at once; docs/RELIABILITY.md).
    """
    time.sleep(settle_s)
    return _ray_processes_alive()


class LocalStack:
    """Triton (ensemble.server.TritonServer) + a local Ray cluster running the gateway app."""

    def __init__(
        self,
        *,
        repo: str | os.PathLike | None = None,
        host: str = HOST,
        http_port: int = 0,
        grpc_port: int | None = 0,
        api_keys: Sequence[str] = (),
        args: Mapping[str, Any] | None = None,
        deployments: Mapping[str, Mapping[str, Any]] | None = None,
        config_path: str | os.PathLike = CONFIG_PATH,
        num_cpus: int | None = None,
        max_replicas: int = 1,
        triton_kwargs: Mapping[str, Any] | None = None,
        triton: Any = None,
        logs_to_stderr: bool = False,
    ) -> None:
        self.repo = repo
        self.host = host
        self._ports = (http_port, grpc_port)
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.api_keys = tuple(api_keys)
        self.args = dict(args or {})
        self.deployments = dict(deployments or {})  # deployment options by name (serve_config.localize)
        self.config_path = config_path
        self.num_cpus = num_cpus or min(os.cpu_count() or 2, 2)
        self.max_replicas = max_replicas
        self.triton_kwargs = dict(triton_kwargs or {})
        self.triton = triton  # an already running ensemble.server.TritonServer to use (and leave running)
        self._own_triton = triton is None
        self.ray_node = RayNode(self.num_cpus)  # its temp dir: Ray's logs (the tests read the audit lines)
        self._log_env = {**SERVICE_LOG_ENV, **QUIET_RAY_ENV} if logs_to_stderr else {}  # `avpenet serve`
        self._supervisor: Any = None  # ensemble.supervisor.TritonSupervisor, made on the first supervise()
        self._saved_env: dict[str, str | None] = {}

    @property
    def http_url(self) -> str:
        return f"http://{HOST if self.host in ('0.0.0.0', '::') else self.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def start(self) -> LocalStack:
        from ensemble.server import TritonServer

        if self._own_triton:
            self.triton = TritonServer(**self._triton_args()).start()
        try:  # picked ports may be taken before Serve binds them: retried on new ones (ensemble.ports)
            ports.retry_on_taken_port(self._start_on_ports, self._stop_serve_attempt, picked=0 in self._ports)
        except BaseException:
            self.stop()
            raise
        return self

    def _stop_serve_attempt(self) -> None:
        """Ray down, its folders gone, the environment restored (the next try sets it again); Triton kept."""
        _stop_ray(graceful=False)
        self._cleanup()

    def _set_env(self, name: str, value: str | None) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def _start_on_ports(self) -> None:
        """One try: pick the ports not given, then start Serve on them."""
        http, grpc = ports.free_ports(2)  # distinct: both proxies bind at once
        self.http_port = self._ports[0] or http
        if self._ports[1] is not None:
            self.grpc_port = self._ports[1] or grpc
        self._start_serve()

    def _start_serve(self) -> None:
        # Ray's processes inherit this environment: loopback-only cluster, and the keys for the replicas
        # (never written into the Serve config, which Ray stores).
        self._set_env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self._set_env("RAY_USAGE_STATS_ENABLED", "0")
        for name, value in {**ALLOCATOR_ENV, **SLOW_START_ENV, **self._log_env}.items():  # unless set
            self._set_env(name, os.environ.get(name, value))
        # Picked ports bind without SO_REUSEPORT, so a clash fails (and is retried) instead of two servers
        # sharing the port; explicit ones keep Ray's default, whose SO_REUSEADDR lets a restart rebind them.
        if 0 in self._ports:
            self._set_env("SERVE_SOCKET_REUSE_PORT_ENABLED", "0")
        if self.api_keys:
            self._set_env(KEYS_ENV, ",".join(self.api_keys))
        if grpc_wire.MAX_MESSAGE_ENV not in os.environ:  # the gRPC proxy refuses bigger messages unread
            self._set_env(grpc_wire.MAX_MESSAGE_ENV, str(self._max_grpc_message_bytes()))
        import ray
        from ray.serve._private.api import serve_start
        from ray.serve.config import gRPCOptions
        from ray.serve.schema import ServeDeploySchema

        self.ray_node.start(ray)
        schema = ServeDeploySchema.model_validate(self.serve_config())
        try:  # serve_start waits for the proxies, so a bind failure surfaces here (as a RayTaskError)
            client = serve_start(
                http_options=schema.http_options.model_dump(),
                grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
                proxy_location=schema.proxy_location,
            )
        except Exception as exc:
            if BIND_FAILURE in str(exc):
                taken = f"HTTP {self.http_port}, gRPC {self.grpc_port}"
                raise ports.PortTaken(f"Serve could not bind its ports ({taken})") from exc
            raise
        client.deploy_apps(schema)
        self._wait_running()

    def _max_grpc_message_bytes(self) -> int:
        from preprocess_service.settings import GatewaySettings

        app = next(a for a in self.serve_config()["applications"] if a["name"] == APP_NAME)
        return grpc_wire.max_message_bytes(GatewaySettings.load(app.get("args")).limits.max_upload_bytes)

    def serve_config(self) -> dict[str, Any]:
        """The Serve config this stack deploys: serve_config.yaml localised to its ports, Triton and args."""
        return localize(
            load_config(self.config_path),
            host=self.host,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            triton_url=self.triton.grpc_url,
            max_replicas=self.max_replicas,
            args=self.args,
            deployments=self.deployments,
        )

    def _wait_running(self) -> None:
        from ray import serve

        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            app = serve.status().applications.get(APP_NAME)
            status = app.status if app else None
            if status == "RUNNING":
                return
            if status == "DEPLOY_FAILED":  # the deployments' messages carry the replica's exception
                why = "; ".join(f"{name}: {d.message}" for name, d in app.deployments.items() if d.message)
                raise RuntimeError(f"gateway deploy failed: {app.message} {why}")
            time.sleep(0.5)
        raise RuntimeError(f"gateway not running after {DEPLOY_TIMEOUT_S:.0f} s (status {status})")

    # --- supervision (`avpenet serve` calls this on a period, from the main thread) ------------------------
    def supervise(self) -> bool:
        """A probe inference; Triton is restarted on its ports after repeated failures (ensemble.supervisor).

        Readiness alone misses a Python-backend stub hung in `execute`. True when the probe answered.
        """
        if not self._own_triton or self.triton is None:
            return True  # someone else's Triton: they supervise it
        if self._supervisor is None or self._supervisor.server is not self.triton:
            from ensemble.supervisor import TritonSupervisor

            self._supervisor = TritonSupervisor(self.triton)
        return self._supervisor.check()

    @property
    def triton_restarts(self) -> int:
        return self._supervisor.restarts if self._supervisor is not None else 0

    @property
    def triton_gave_up(self) -> bool:
        return self._supervisor is not None and self._supervisor.gave_up

    def _triton_args(self) -> dict[str, Any]:
        return {**self.triton_kwargs, **({"repo": self.repo} if self.repo is not None else {})}

    def stop(self, graceful: bool = True) -> None:
        """Graceful: Serve drains while our Triton still answers, then Triton. Otherwise Triton first (ours,
        quick), then Ray. Ray's folders last; each step runs if one before fails."""
        ray_down = functools.partial(_stop_ray, graceful)
        first, second = (ray_down, self._stop_own_triton) if graceful else (self._stop_own_triton, ray_down)
        try:
            first()
        finally:
            try:
                second()
            finally:
                self._cleanup()

    def _stop_own_triton(self) -> None:
        if self.triton is not None and self._own_triton:
            self.triton.stop()
            self.triton = None

    def _cleanup(self) -> None:
        self.ray_node.remove()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
