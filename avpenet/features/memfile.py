"""An upload in memory as a read-only file, read where it lies.

`io.BytesIO` shares the buffer only of an exact `bytes` object: given a bytearray or a memoryview (the
gateway hands each multipart part on as a view into the request body, `preprocess_service/multipart.py`)
it copies the whole upload first. libsndfile, FFmpeg and zipfile only read and seek, so `ViewFile` gives them
that over the caller's buffer and each decode holds no second copy of the upload.
"""

from __future__ import annotations

import io
from typing import Any

Buffer = bytes | bytearray | memoryview


class ViewFile(io.RawIOBase):
    """A readable, seekable file over `data` (any contiguous buffer), never written to nor copied whole.

    A seek before the start raises ValueError, as BytesIO's does; `CLAMP_BEFORE_START` stops there instead.
    """

    CLAMP_BEFORE_START = False

    def __init__(self, data: Buffer) -> None:
        super().__init__()
        self._view = memoryview(data).toreadonly().cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def getbuffer(self) -> memoryview:
        """The whole file as a read-only view (no copy)."""
        return self._view

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        start = self._pos
        self._pos = min(start + len(out), len(self._view)) if start < len(self._view) else start
        out[: self._pos - start] = self._view[start : self._pos]
        return self._pos - start

    def read(self, size: int | None = -1) -> bytes:
        """bytes (PyAV's read callback takes nothing else), copying only what is read."""
        end = len(self._view) if size is None or size < 0 else self._pos + size
        data = bytes(self._view[self._pos : end])
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += len(self._view)
        elif whence != io.SEEK_SET:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if offset < 0 and not self.CLAMP_BEFORE_START:
            raise ValueError(f"negative seek value {offset}")
        self._pos = max(offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos
