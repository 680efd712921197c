"""Replace a file whole and durably: how the avpenet commands (and ensemble's plans and reports) write the
reports, checkpoints, splits, label files and feature-cache clips a later run reads (a synth clip's own media
are still written in place, guarded by its progress record, written after them).

Why: written in place, a crash or a full disk mid-write left half a file (a feature-cache clip, a split.json,
a report, a checkpoint) that the next run read. Here the new content goes to a hidden file beside the old
one, is fsynced, takes the old file's mode and is swapped in with `os.replace`; the folder is fsynced after,
so the swap survives a power loss too: the file is the old one or the new one, whole. Files read together
(a checkpoint and its config) are all staged before the first is swapped in (`replace_files`). The model
repository's publications (ensemble/publish.py) stage their files with the same `stage`. A staged file a
crash left behind is removed, once an hour old, by a process's first replacement of a file in its folder
(`sweep_stale`). Standard library only, so any layer imports it at no cost.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

STALE_STAGED_S = 3600.0  # a staged file untouched this long was left by a crash (sweep_stale)
STAGED_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.new")  # staged_name's pattern
_SWEPT: set[Path] = set()  # folders sweep_stale has swept in this process


def replace_text(path: Path, text: str) -> None:
    """Replace `path` with `text` whole and durably (see the module doc)."""
    replace_files({Path(path): text})


def replace_bytes(path: Path, data: bytes | memoryview) -> None:
    """`replace_text` for binary content (a checkpoint, an image, an .npz)."""
    replace_files({Path(path): data})


def replace_files(contents: dict[Path, str | bytes | memoryview]) -> None:
    """Replace several files that are read together (a checkpoint and its config): every one is staged and
    on disk before the first is swapped in, so a full disk or a failed write leaves them all as they were,
    never a new one beside an old one. A symbolic link is written through (its target is replaced, the
    link kept), and what is not a regular file (`--json /dev/stdout`, a pipe) is written to as it is."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, content in contents.items():
            target = Path(path).resolve() if Path(path).is_symlink() else Path(path)
            if target.exists() and not target.is_file():
                _write_through(target, content)
                continue
            staged.append((stage(target, content), target))
        for new, path in staged:
            os.replace(new, path)
    except BaseException:
        for new, _ in staged:  # the ones not swapped in yet
            new.unlink(missing_ok=True)
        raise
    for folder in dict.fromkeys(path.parent for _, path in staged):
        fsync(folder)
    for folder in dict.fromkeys(path.parent for _, path in staged):
        sweep_stale(folder)


def sweep_stale(folder: Path, older_than_s: float = STALE_STAGED_S) -> list[Path]:
    """Remove the staged files a crashed writer left in `folder` (`staged_name`'s pattern, untouched for
    `older_than_s`), once per folder and process: nothing reads them, but a feature cache or checkpoint folder
    rewritten after many crashes would keep every one, and listing a 3,000-clip folder after each write would
    cost the cache build O(N^2). A writer at work now touches its staged file within seconds: left alone."""
    if folder in _SWEPT:
        return []
    _SWEPT.add(folder)
    removed, now = [], time.time()
    for leftover in folder.glob(".*.new"):
        if not STAGED_NAME.fullmatch(leftover.name):
            continue
        try:
            if now - leftover.stat().st_mtime > older_than_s:
                leftover.unlink()
                removed.append(leftover)
        except FileNotFoundError:  # another writer swept or swapped it in
            continue
    return removed


def _write_through(path: Path, content: str | bytes | memoryview) -> None:
    """Write to a device or pipe in place: replacing it would put a regular file where /dev/stdout was."""
    with open(path, "w" if isinstance(content, str) else "wb") as file:
        file.write(content)


def staged_name(path: Path) -> Path:
    """A hidden file beside `path` for its new content (no version, no model to Triton, no clip to the
    feature cache), a new name each time: two writers of the same file at once (two `avpenet features` runs
    on one dataset, in containers that may share a pid) would otherwise write into one staged file, and the
    first to swap it in could publish the other's half-written bytes. One left by a crash is removed once
    stale (sweep_stale)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.new")


def stage(path: Path, content: str | bytes | memoryview) -> Path:
    """`content` in a new `staged_name(path)`, on disk and with `path`'s mode, ready for `os.replace`; the
    partial file is removed when writing it fails."""
    new = staged_name(path)
    try:
        if isinstance(content, str):
            new.write_text(content)
        else:
            new.write_bytes(content)
        fsync(new)
        if path.exists():
            shutil.copymode(path, new)
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    return new


def fsync(path: Path) -> None:
    """Flush `path`'s bytes (a file) or entries (a folder) to disk. Linux syncs the inode through any
    descriptor, so one read-only open serves both."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
