"""API keys: HTTP `Authorization: Bearer <key>` or gRPC metadata `authorization`, compared in constant time.

Only SHA-256 digests of the keys are kept in memory. Keys come from `AVPENET_API_KEYS` (comma-separated)
and/or a file (one per line, `#` comments; a Kubernetes Secret mounted as a file). The file is re-read when it
changes, so removing a line revokes that key without a restart. Whether keys are required is decided once, at
start: a file emptied, deleted or caught mid-rewrite later refuses every request, never lets all in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from preprocess_service.errors import Unauthenticated

RELOAD_CHECK_S = 2.0  # how often the key file's mtime is looked at


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeys:
    """The accepted keys; `check(token)` compares against every key without an early exit."""

    def __init__(self, keys: Iterable[str] = (), key_file: str | os.PathLike | None = None) -> None:
        self._static = {_digest(k) for k in keys if k}
        self._file = Path(key_file) if key_file else None
        self._file_digests: set[bytes] = set()
        self._file_stamp: tuple[int, int, int] | None = None  # (mtime_ns, size, inode): any rewrite shows
        self.enforced = bool(self._static) or self._file is not None  # keys required from now on
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._reload(force=True)

    @property
    def configured(self) -> bool:
        self._reload()
        return bool(self._static or self._file_digests)

    def _reload(self, force: bool = False) -> None:
        if self._file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_CHECK_S:
            return
        with self._lock:
            self._checked_at = now
            try:
                st = self._file.stat()
            except FileNotFoundError:
                if force:
                    raise FileNotFoundError(f"API key file {self._file} does not exist") from None
                self._file_digests, self._file_stamp = set(), None  # a deleted file revokes its keys
                return
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._file_stamp:
                return
            lines = self._file.read_text(encoding="utf-8-sig").splitlines()  # -sig: Notepad's BOM is no key
            self._file_digests = {_digest(s) for line in lines if (s := line.split("#", 1)[0].strip())}
            self._file_stamp = stamp

    def check(self, token: str | None) -> bool:
        self._reload()
        presented = _digest(token or "")
        ok = False
        for known in (*self._static, *self._file_digests):
            ok |= hmac.compare_digest(presented, known)
        return ok and token is not None

    def require(self, token: str | None) -> None:
        """Raise Unauthenticated unless `token` is one of the keys (a no-op when neither keys nor a key file
        were given at start; with a key file, an empty or missing one accepts nothing)."""
        if not self.enforced:
            return
        if token is None:
            raise Unauthenticated("missing API key: send `Authorization: Bearer <key>`")
        if not self.check(token):
            raise Unauthenticated("API key not accepted")
