"""The Python backend's shared-memory regions of each tritonserver launch: named so that they can be found,
and removed once the server that made them is gone.

Triton and its Python-backend stubs pass every tensor through POSIX shared memory (files in /dev/shm on
Linux, RAM). Triton unlinks its regions when it exits cleanly; a server that is killed (the supervisor's
SIGKILL of a hung stub, a crash, the OOM killer) leaves them behind: 4 MB or more of RAM each, readable by
every local user, holding the last tensors the stubs exchanged, the patient's waveform among them. So each
launch names its regions with its own prefix (host, PID namespace, launcher pid, a random token):
`TritonServer.stop()` removes its launch's regions, and `start()` those of launchers that no longer run in
the same host and PID namespace (where "no longer runs" can be told). /dev/shm is writable by every local
user, so the sweep touches only regular files and never lets an error stop a start.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import stat
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "avpenet_triton_"
log = logging.getLogger("avpenet.triton")


def _scope() -> str:
    """<host>_<pid namespace>: where a launcher's pid means what it says (containers may share /dev/shm and
    a host name, as with Docker's --ipc=host --network=host, yet each has its own pids)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{host}_{namespace}"


def launcher_tag() -> str:
    """<host>_<pidns>_<pid>_: what names this process as the launcher of something it leaves in /dev/shm."""
    return f"{_scope()}_{os.getpid()}_"


def orphaned(name: str, prefix: str) -> bool:
    """Whether `name` is `prefix` + the launcher tag of a launcher in this host and PID namespace that no
    longer runs (killed before it could clean up)."""
    match = re.match(rf"{re.escape(prefix)}{re.escape(_scope())}_(\d{{1,10}})_", name)
    return match is not None and not _running(int(match.group(1)))


def new_prefix() -> str:
    """The region-name prefix of one launch: avpenet_triton_<host>_<pidns>_<pid>_<token>_."""
    return f"{PREFIX}{launcher_tag()}{secrets.token_hex(4)}_"


def backend_arg(prefix: str) -> str:
    """The tritonserver flag that makes the Python backend name its regions `prefix` + a UUID."""
    return f"--backend-config=python,shm-region-prefix-name={prefix}"


def remove(prefix: str, shm_dir: Path = SHM_DIR) -> int:
    """Unlink the regions whose names start with `prefix`; how many were removed."""
    return sum(_unlink(path) for path in shm_dir.glob(f"{prefix}*"))


def remove_orphans(shm_dir: Path = SHM_DIR) -> int:
    """Unlink the regions of launchers in this host and PID namespace that no longer run (killed before their
    stop()); how many. A launcher still running, or one of another scope or user, keeps its regions."""
    return sum(_unlink(path) for path in shm_dir.glob(f"{PREFIX}*") if orphaned(path.name, PREFIX))


def _running(pid: int) -> bool:
    """Whether `pid` names a process (another user's counts); True when that cannot be told (keep the
    regions)."""
    import psutil

    try:
        return psutil.pid_exists(pid)
    except (OverflowError, ValueError):  # a pid the kernel refuses
        return True


def _unlink(path: Path) -> bool:
    """Remove `path` if it is a regular file; any failure is logged, never raised (a cleanup must not stop
    Triton from starting or stopping)."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove the shared-memory region %s: %s", path.name, exc)
        return False
    return True
