"""Loopback addresses for the local services (Triton, the Ray Serve gateway) this project starts itself."""

from __future__ import annotations

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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


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
