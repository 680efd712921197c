"""Loopback addresses for the local services (Triton, the Ray Serve gateway) this project starts itself."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A currently free loopback TCP port (the OS picks it; a caller that loses a race to bind it retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
