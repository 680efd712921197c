"""A real MLLP listener on loopback standing in for an interface engine, scripted per message: it ACKs, NACKs
or drops the connection without an answer (tests/gateway/test_hl7_mllp.py, test_hl7_redelivery.py)."""

from __future__ import annotations

import asyncio
import socket

from preprocess_service import hl7v2, mllp


class Listener:
    """An interface engine stand-in: parses each message with hl7apy and answers with `codes` in turn (or
    with `answer(control_id)`, an engine's own ACK text)."""

    def __init__(self, codes: list[str], answer=None, sock: socket.socket | None = None) -> None:
        self.codes = codes
        self.answer = answer
        self.sock = sock  # a bound socket to listen on (connections to it were refused until now)
        self.received: list[str] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        payload = await mllp.read_frame(reader)
        self.received.append(payload)
        code = self.codes[min(len(self.received), len(self.codes)) - 1]
        if code == "DROP":
            writer.close()
            return
        control_id = hl7v2.parse(payload).msh.msh_10.value
        text = hl7v2.ack(control_id, code, "" if code == "AA" else "engine says no")
        writer.write(mllp.frame(self.answer(control_id) if self.answer else text))
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> mllp.MllpTarget:
        if self.sock is None:
            self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        else:
            self.server = await asyncio.start_server(self.handle, sock=self.sock)
        port = self.server.sockets[0].getsockname()[1]
        return mllp.MllpTarget("127.0.0.1", port, timeout_s=5.0, retries=2, backoff_s=0.01)

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()
