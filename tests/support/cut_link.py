"""A loopback TCP proxy whose first connection is cut mid-stream: a bedside device's link dropping."""

from __future__ import annotations

import asyncio
import contextlib


class CutLink:
    """Forwards 127.0.0.1:`port` to `target_port`; the first connection is aborted (both ways, no close frame)
    once more than `cut_after` bytes went upstream; later connections pass untouched."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port, self.cut_after = target_port, cut_after
        self.connections = 0
        self.cut = False
        self.port = 0

    async def __aenter__(self) -> CutLink:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = self.connections == 0
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            sent = 0
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    sent += len(data)
                    if upstream and first and sent > self.cut_after:
                        self.cut = True
                        break
            for w in (writer, up_writer):  # the link is gone for both ends at once
                w.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
