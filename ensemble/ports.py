"""Loopback addresses for the local services (Triton, the Ray Serve gateway) this project starts itself."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

HOST = "127.0.0.1"
# A port picked free can be taken by another process before the server that was given it binds it.
BIND_ATTEMPTS = 3
log = logging.getLogger("avpenet.ports")


class PortTaken(RuntimeError):
    """A server could not bind its port: another process holds it."""


def free_port() -> int:
    """A currently free loopback TCP port (the OS picks it; a caller that loses a race to bind it retries)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback TCP ports. Every socket stays bound until all are picked: picked one after
    another, the OS may hand out a port it has just released (Triton was once given one port for both HTTP
    and metrics, and refused to start)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def retry_on_taken_port(start: Callable[[], None], undo: Callable[[], None], *, picked: bool) -> None:
    """start() until it does not raise PortTaken, at most BIND_ATTEMPTS times, undo() between tries.

    start() picks its ports afresh each time; ports given explicitly (`picked` False) are not retried.
    """
    for attempt in range(1, BIND_ATTEMPTS + 1):
        try:
            start()
            return
        except PortTaken as exc:
            if not picked or attempt == BIND_ATTEMPTS:
                raise
            log.warning("%s; retrying on other ports (%d/%d)", exc, attempt + 1, BIND_ATTEMPTS)
            undo()
