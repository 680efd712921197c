"""All-or-nothing changes to a model repository: every new version, pruned version, record and config of one
`avpenet export` lands, or none does.

Why: a disk error (ENOSPC, a permission) while publishing the second part used to leave the first at N+1
beside the others at N, already pruned, with configs not rewritten: a pairing never validated, served at the
next load. Here each step is applied at once and remembers how to undo it; the first failure undoes every
step taken, newest first, and re-raises, so the repository is left byte for byte as it was. New files are
written under names Triton ignores (a hidden folder is no version: not a number) and renamed into place;
a file is replaced with `os.replace`, so a polling Triton sees the old file or the new one, never half of one.
A Publication holds its repository's lock (repository_lock.py) from entry to exit: one writer at a time.

Durable too: a rename reaches the disk in the directory's metadata, the renamed file's bytes separately, and
a power loss in between left a swapped-in config or manifest empty. So every file written (and a staged
folder's entries) is fsynced before the rename that makes it visible, and each folder a rename changed is
fsynced once all renames are done: after a crash either the old or the new version is there, whole. An undo
is made durable the same way: each folder its renames and removals changed is fsynced once they are done,
so a crash after a failed publication finds the repository as it was, not half undone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from avpenet.durable import fsync as _fsync
from avpenet.durable import stage as _stage
from ensemble import repository_lock


class Publication:
    """`with Publication(repo) as tx:` apply steps through `tx`; an exception out of the block undoes them
    all. `repo` is locked for the block: what is read in it to decide the steps is still so when they land."""

    def __init__(self, repo: Path) -> None:
        self._repo = Path(repo)
        self._lock = contextlib.ExitStack()
        # each step's undo, newest last, with the folders whose entries it changes (fsynced once undone)
        self._undo: list[tuple[Callable[[], object], tuple[Path, ...]]] = []
        self._discard: list[Path] = []  # deleted once everything landed: pruned versions, replaced files
        self._renamed_in: dict[Path, None] = {}  # folders whose entries a rename changed, fsynced at the end

    def __enter__(self) -> Publication:
        self._lock.enter_context(repository_lock.hold(self._repo))  # RepositoryBusy before any step
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:  # entered in __enter__: released once the steps landed or were undone
            self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        if error is None:
            for folder in self._renamed_in:  # the renames on disk before anything is deleted
                _fsync(folder)
            for path in self._discard:  # out of Triton's sight already: a leftover would be harmless
                _remove(path)
            return
        undone: dict[Path, None] = {}
        for undo, folders in reversed(self._undo):
            undone.update(dict.fromkeys(folders))
            with contextlib.suppress(OSError):  # undo the rest; the error raised is the one that failed
                undo()
        for folder in undone:  # the undo on disk before the lock is released; a folder it removed is gone
            with contextlib.suppress(OSError):  # with its entries (its parent is synced): not found
                _fsync(folder)

    def _on_failure(self, undo: Callable[[], object], *folders: Path) -> None:
        """Remember how to undo a step and the folders whose entries the undo changes."""
        self._undo.append((undo, folders))

    def make_dirs(self, folder: Path) -> None:
        """`folder` and any missing parent; the ones created here are removed on failure."""
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for path in reversed(missing):
            path.mkdir()
            self._on_failure(path.rmdir, path.parent)

    def stage_folder(self, folder: Path, files: dict[str, bytes]) -> None:
        """Write `files` into `folder` (a hidden name: not a version yet); removed on failure."""
        self.make_dirs(folder.parent)
        shutil.rmtree(folder, ignore_errors=True)  # left by an export that was killed
        self._on_failure(lambda: shutil.rmtree(folder, ignore_errors=True), folder.parent)
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
            _fsync(folder / name)
        _fsync(folder)  # its entries, before `move` shows it

    def move(self, source: Path, target: Path) -> None:
        """Rename `source` to `target` (which must not exist); renamed back on failure."""
        if target.exists():
            raise FileExistsError(f"{target} exists: refusing to replace it")
        source.rename(target)
        self._on_failure(lambda: target.rename(source), source.parent, target.parent)
        self._renamed_in.update(dict.fromkeys([source.parent, target.parent]))

    def retire(self, folder: Path) -> None:
        """Take `folder` out of Triton's sight now (a hidden name) and delete it once everything landed."""
        hidden = folder.with_name(f".retired-{folder.name}")
        shutil.rmtree(hidden, ignore_errors=True)
        self.move(folder, hidden)
        self._discard.append(hidden)

    def write_text(self, path: Path, text: str) -> None:
        """Replace `path`'s content (the same text is not rewritten); the old file comes back on failure."""
        if path.is_file() and path.read_bytes() == text.encode():
            return
        self.make_dirs(path.parent)
        staged: list[Path] = []  # registered first: the undo fsyncs the folder even when staging failed
        self._on_failure(lambda: [p.unlink(missing_ok=True) for p in staged], path.parent)
        new = _stage(path, text)  # removes its own partial file when it fails
        staged.append(new)
        if path.exists():
            old = path.with_name(f".{path.name}.old")  # the same inode: undoing is a rename, no disk space
            old.unlink(missing_ok=True)
            try:
                os.link(path, old)
            except OSError:  # a file system without hard links
                shutil.copy2(path, old)
            self._on_failure(lambda: os.replace(old, path), path.parent)
            self._discard.append(old)
        else:
            self._on_failure(lambda: path.unlink(missing_ok=True), path.parent)
        os.replace(new, path)
        self._renamed_in[path.parent] = None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
