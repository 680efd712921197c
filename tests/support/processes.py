"""The stack's processes as psutil sees them, for tests that watch what a request does to a process.

Ray titles its workers (`ray::ServeReplica:<app>:<deployment>`, `ray::ProxyActor`), so they are found by
command line among this test process's descendants; a process that ends while it is read is left out, since
Serve may be replacing a replica at that moment.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psutil


def descendants(*titles: str) -> list[tuple[psutil.Process, str]]:
    """(process, command line) of this process's descendants whose command line holds one of `titles`
    (every descendant when none is given)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if not titles or any(t in title for t in titles):
            found.append((proc, title))
    return found


def serve_replicas(*deployments: str) -> list[psutil.Process]:
    """This session's Ray Serve replica processes (optionally only some deployments)."""
    return [
        proc
        for proc, title in descendants("ServeReplica")
        if not deployments or any(d in title for d in deployments)
    ]


def rss_mb(procs: Iterable[psutil.Process]) -> float:
    """Their resident memory together, in MiB; a process that has ended counts nothing."""
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def receiving_udp_sockets(procs: Iterable[psutil.Process]) -> int:
    """UDP sockets bound to receive from anyone (no peer): what FFmpeg's RTP demuxer opens for SDP text.

    Connected UDP sockets (a DNS lookup, or a library finding the host's address) have a peer and are not
    counted: on a CI machine some replica thread opened one while a refused upload ran.
    """
    count = 0
    for proc in procs:
        try:
            count += sum(1 for c in proc.net_connections(kind="udp") if not c.raddr)
        except psutil.Error:
            continue
    return count


def dead_pid() -> int:
    """A pid no process can have: above the kernel's limit (for names that claim a launcher that is gone)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
