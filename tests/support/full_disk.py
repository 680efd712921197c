"""A disk that fills up mid-write, for the tests that a file the next run reads is replaced whole."""

from __future__ import annotations

import errno
import pathlib
from pathlib import Path


def fill_disk_midway(
    monkeypatch, root: Path, methods: tuple[str, ...] = ("write_text", "write_bytes")
) -> None:
    """Every `Path.write_text` / `Path.write_bytes` (of `methods`) under `root` writes half its content, then
    fails as a full disk does (ENOSPC); writes elsewhere go through."""
    for name in methods:
        original = getattr(pathlib.Path, name)

        def half_then_enospc(self: Path, data, *args, _original=original, **kwargs) -> int:
            if not Path(self).is_relative_to(root):
                return _original(self, data, *args, **kwargs)
            _original(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device", str(self))

        monkeypatch.setattr(pathlib.Path, name, half_then_enospc)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes): what a failed write must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
