"""Content digests of output folders, for tests that compare two runs byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ensemble.repository_lock import LOCK_NAME


def tree_digest(directory: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `directory`."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def repository_snapshot(repo: Path) -> dict[str, bytes | None]:
    """Every path under a model repository (hidden ones included, the writers' lock not, which holds no
    content): a file's bytes, None for a folder."""
    return {
        str(p.relative_to(repo)): p.read_bytes() if p.is_file() else None
        for p in repo.rglob("*")
        if p.name != LOCK_NAME
    }
