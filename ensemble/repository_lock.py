"""One writer at a time per model repository.

Why: `avpenet export`, `avpenet quantize` and `python -m ensemble.configs` (also `python -m ensemble.tune`)
each read the versions and high-water marks on disk, decide what to write, and write. Two at once into one
repository both read N and both published N+1: one replaced or broke the other's files, and said nothing.

Every writer holds `hold(repo)` (a `Publication` takes it) for its whole read-decide-write sequence: an
exclusive `fcntl.flock` on `<repo>/.publish.lock`. A file at the repository root is no model to Triton, which
loads only the root's subdirectories. A second writer does not wait: it fails at once with RepositoryBusy,
naming the lock and the holder's pid (the CLI prints that line and exits 2), so a CI job fails visibly and can
be rerun rather than hang behind a stuck export. The kernel drops the lock when its holder ends, killed
included: there is no stale lock to delete by hand. Within one thread `hold` nests (an export's Publication
inside the export's own hold); another thread or process is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = ".publish.lock"
_held = threading.local()  # {real path of a lock this thread holds: how deeply}


class RepositoryBusy(BlockingIOError):
    """Another writer holds the repository's lock: an OSError, so the CLI prints one line and exits 2."""


def _holder() -> str:
    """Who holds the lock, written into it for the writer that is refused."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv else "python"
    since = datetime.now(UTC).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {since})"


@contextlib.contextmanager
def hold(repo: Path) -> Iterator[Path]:
    """Hold `repo`'s lock for the block (creating `repo` to hold it); RepositoryBusy at once when another
    thread or process holds it. Yields the lock file."""
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    path = repo / LOCK_NAME
    key = os.path.realpath(path)
    depths: dict[str, int] = _held.__dict__.setdefault("depths", {})
    if depths.get(key):
        depths[key] += 1
        try:
            yield path
        finally:
            depths[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode(errors="replace").strip()
            raise RepositoryBusy(
                f"{repo} is being written by {holder or 'a writer that has just started'}, which holds "
                f"{path}; nothing was written. Run again once it has finished (two writers at once would "
                "both take the same next version)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder() + "\n").encode(), 0)
        depths[key] = 1
        try:
            yield path
        finally:
            del depths[key]
            os.ftruncate(fd, 0)  # no holder named while nobody holds it
    finally:
        os.close(fd)  # closing the descriptor releases the lock
