"""The local Ray node that LocalStack runs Serve on: a private temp dir, uploads kept in RAM, a slow start
tried again.

Upload bytes cross Ray's object store (Serve's proxy to a Gateway replica, a Gateway to the
FeatureExtractor). The store lives in /dev/shm (RAM), but when it is full Ray spills objects to files, and
when it cannot spill it allocates new ones in files: both in the node's temp dir by default, on disk. A
patient's audio and video would then be written to disk. This node spills into a private folder in /dev/shm
instead (Ray's `object_spilling_directory`, also its fallback directory): Ray deletes a spilled object once
it is freed, and the folder goes when the node stops; a node whose launcher was killed leaves its folder
behind, so the next start in this host and PID namespace removes it (named as ensemble/shm_regions.py names
Triton's regions). /dev/shm is RAM (tmpfs: swappable like any memory). When it is too small for the store
itself (a container started with Docker's 64 MiB default), Ray puts the store in the temp dir: that is
logged as a warning naming the fix. The Kubernetes manifests do the same with `ray start` flags.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from ensemble import ports, shm_regions

SHM_DIR = Path("/dev/shm")
SPILL_PREFIX = "avpenet-ray-spill-"
TEMP_PREFIX = "avpenet-ray-"  # short: Ray's socket paths under it must fit 107 bytes
RAY_START_TIMEOUT = "timed out during startup"  # Ray's own message when the raylet misses its window
RAY_START_ATTEMPTS = 3
# Serve's controller kills a proxy that is not ready this many seconds after it was created, its worker's
# start included (Ray's default 5 s), and `serve_start` then fails with ActorDiedError ("killed by `ray.kill`
# ... never ran"): on a 2-core box busy with other work (training, a test run) the proxy's worker took longer
# than that to start, and the whole stack failed. LocalStack sets it for Ray's processes unless it is set;
# the RayService's pods set the same (k8s/templates/gateway-rayservice.yaml; tests/deploy/test_k8s.py).
SLOW_START_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}
# Ray's processes as a service (`avpenet serve`, the RayService's pods): the workers' stdout and stderr, the
# Gateway's audit lines among them, go to the launcher's stderr (journald, `docker logs`, the container log a
# cluster's log agent ships), not into files in Ray's temp dir, which `avpenet serve` removes when it stops
# and which in a pod is an emptyDir deleted with it (docs/DEPLOY.md, Logs and the audit trail). What Ray
# still writes to files (Serve's proxy and replica logs) rotates at 128 MiB with 3 old files kept.
SERVICE_LOG_ENV = {
    "RAY_LOG_TO_STDERR": "1",
    "RAY_ROTATION_MAX_BYTES": str(128 * 2**20),
    "RAY_ROTATION_BACKUP_COUNT": "3",
}
# ... and for `avpenet serve`, Ray's own Python components at warnings: on one machine Ray's autoscaler
# monitor runs beside the workers and printed its status to the same stderr every 5 s (288 lines an idle
# minute, measured; 0 with these). Its C++ processes (raylet, GCS, each worker's core) at errors: at
# warnings they printed 18 records over a start and a stop with nothing wrong (names looked up before Serve
# made them, "Quick exit", a client of the object store gone; 25 records, 73 lines, while the stop still
# called serve.shutdown()) and none while 30 clips were scored: Ray's routine, not the service's.
# RAY_BACKEND_LOG_LEVEL=warning set by the operator shows them again (LocalStack keeps what is set). In the
# pods KubeRay's autoscaler container runs the monitor, and Ray's defaults stay.
QUIET_RAY_ENV = {
    "RAY_ENABLE_CLUSTER_STATUS_LOG": "0",
    "RAY_LOGGER_LEVEL": "warning",
    "RAY_BACKEND_LOG_LEVEL": "error",
}
log = logging.getLogger("avpenet.stack")


def shm_free_bytes(shm_dir: Path = SHM_DIR) -> int:
    """Free bytes in /dev/shm, as Ray measures them when it places its store (0 without /dev/shm)."""
    try:
        stats = os.statvfs(shm_dir)
    except OSError:
        return 0
    return stats.f_bsize * stats.f_bavail


def remove_orphan_spill_dirs(shm_dir: Path = SHM_DIR) -> int:
    """Delete the spill folders of launchers in this host and PID namespace that no longer run; how many.
    Only this user's real folders: /dev/shm is writable by every local user."""
    removed = 0
    for path in shm_dir.glob(f"{SPILL_PREFIX}*"):
        try:
            info = path.lstat()
            if not (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()):
                continue
            if shm_regions.orphaned(path.name, SPILL_PREFIX):
                shutil.rmtree(path)
                removed += 1
        except OSError as exc:  # a cleanup must not stop the stack from starting
            log.warning("could not remove the spill folder %s: %s", path.name, exc)
    return removed


def store_on_disk_warning(shm_free: int, store_bytes: int, temp_dir: str) -> str | None:
    """What to tell the operator when Ray's store did not fit in /dev/shm (Ray maps it from `temp_dir`)."""
    if store_bytes <= shm_free:
        return None
    return (
        f"Ray's object store ({store_bytes / 2**20:.0f} MiB) does not fit in /dev/shm "
        f"({shm_free / 2**20:.0f} MiB free), so Ray keeps it in files under {temp_dir}: upload bytes "
        "pass through it and may reach the disk. Give /dev/shm room for it (docker run --shm-size=2g, or a "
        "memory-backed volume at /dev/shm)"
    )


class RayNode:
    """One local Ray node: `start(ray)` runs ray.init, `remove()` deletes its folders after ray.shutdown."""

    def __init__(self, num_cpus: int, object_store_bytes: int | None = None) -> None:
        self.num_cpus = num_cpus
        self.object_store_bytes = object_store_bytes  # None: Ray's default (30% of memory, capped by shm)
        self.temp_dir: str | None = None
        self.spill_dir: str | None = None

    def start(self, ray: Any) -> None:
        """ray.init, tried again when the raylet misses Ray's fixed 30 s registration window.

        That window is hard-coded in Ray; a box busy with other work (a CI neighbour, a training run) can miss
        it once while the next try starts in seconds, so one slow start must not fail the whole stack.
        """
        if self.spill_dir is None and SHM_DIR.is_dir():
            remove_orphan_spill_dirs(SHM_DIR)
            prefix = f"{SPILL_PREFIX}{shm_regions.launcher_tag()}"
            self.spill_dir = tempfile.mkdtemp(prefix=prefix, dir=SHM_DIR)  # mode 0700: this user only
        elif self.spill_dir is None:
            log.warning("no %s: Ray spills objects (upload bytes among them) under its temp dir", SHM_DIR)
        shm_free = shm_free_bytes()
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            self.temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
            try:
                ray.init(**self._init_kwargs())
                break
            except Exception as exc:
                if RAY_START_TIMEOUT not in str(exc) or attempt == RAY_START_ATTEMPTS:
                    ray.shutdown()  # a node half started would outlive the folders remove() deletes
                    raise
                log.warning(
                    "Ray node missed its start-up window; starting it again (%d/%d)",
                    attempt + 1,
                    RAY_START_ATTEMPTS,
                )
                ray.shutdown()  # whatever of the node did start
                shutil.rmtree(self.temp_dir, ignore_errors=True)
        store_bytes = int(ray.cluster_resources().get("object_store_memory", 0))
        warning = store_on_disk_warning(shm_free, store_bytes, self.temp_dir)
        if warning:
            log.warning(warning)

    def _init_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            num_cpus=self.num_cpus,
            include_dashboard=False,
            _temp_dir=self.temp_dir,
            _node_ip_address=ports.HOST,
            configure_logging=False,
            log_to_driver=bool(os.environ.get("AVPENET_RAY_LOGS")),
        )
        if self.object_store_bytes is not None:
            kwargs["object_store_memory"] = self.object_store_bytes
        if self.spill_dir is not None:
            kwargs["object_spilling_directory"] = self.spill_dir
        return kwargs

    def remove(self) -> None:
        """Delete the temp and spill folders (after ray.shutdown: Ray's processes write into both)."""
        for name in ("temp_dir", "spill_dir"):
            path = getattr(self, name)
            if path:
                shutil.rmtree(path, ignore_errors=True)
                setattr(self, name, None)
