"""Content digests of output folders, for tests that compare two runs byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_digest(directory: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `directory`."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
