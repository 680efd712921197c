"""The Python backend's shared-memory regions of each tritonserver launch: named so that they can be found,
and removed once the server that made them is gone.

Triton and its Python-backend stubs pass every tensor through POSIX shared memory (files in /dev/shm on
Linux, RAM). Triton unlinks its regions when it exits cleanly; a server that is killed (the supervisor's
SIGKILL of a hung stub, a crash, the OOM killer) leaves them behind: 4 MB or more of RAM each, readable by
every local user, holding the last tensors the stubs exchanged, the patient's waveform among them. So each
launch names its regions with its own prefix (host, launcher pid, a random token); `TritonServer.stop()`
removes its launch's regions, and `start()` those of launchers on this host that no longer run.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "avpenet_triton_"


def _host() -> str:
    """This host's name as it may appear in a region name (containers sharing /dev/shm have their own)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def new_prefix() -> str:
    """The region-name prefix of one launch: avpenet_triton_<host>_<pid>_<token>_."""
    return f"{PREFIX}{_host()}_{os.getpid()}_{secrets.token_hex(4)}_"


def backend_arg(prefix: str) -> str:
    """The tritonserver flag that makes the Python backend name its regions `prefix` + a UUID."""
    return f"--backend-config=python,shm-region-prefix-name={prefix}"


def remove(prefix: str, shm_dir: Path = SHM_DIR) -> int:
    """Unlink the regions whose names start with `prefix`; how many were removed."""
    removed = 0
    for path in shm_dir.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def remove_orphans(shm_dir: Path = SHM_DIR) -> int:
    """Unlink the regions of launchers on this host that no longer run (killed before their stop()); how many.
    A launcher still running, or one of another host or user, keeps its regions."""
    mine = re.compile(rf"{re.escape(PREFIX)}{re.escape(_host())}_(\d+)_[0-9a-f]+_")
    removed = 0
    for path in shm_dir.glob(f"{PREFIX}*"):
        match = mine.match(path.name)
        if match and not _running(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError, PermissionError):
                path.unlink()
                removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
