"""LocalStack picks free ports before Serve binds them; when another process takes one first, it retries.

The unit tests fake Serve's start (they check the retry decisions); the slow test takes the first port for
real and starts real Triton + Ray Serve in a subprocess (Ray allows one cluster per process, and the session's
gateway stack may already hold it).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from ensemble import ports
from ensemble.ports import BIND_ATTEMPTS, PortTaken
from preprocess_service import stack as stack_mod
from preprocess_service.stack import LocalStack


class _FakeTriton:
    grpc_url = "127.0.0.1:1"


def _fake_stack(monkeypatch, clashes: int, **kwargs) -> tuple[LocalStack, list[tuple], list[str]]:
    """A LocalStack whose Serve start fails with PortTaken `clashes` times, recording what it was asked."""
    attempts: list[tuple] = []
    events: list[str] = []
    picks = iter(range(41000, 41100))
    monkeypatch.setattr(ports, "free_ports", lambda n: [next(picks) for _ in range(n)])

    def start_serve(self) -> None:
        attempts.append((self.http_port, self.grpc_port))
        if len(attempts) <= clashes:
            raise PortTaken("Serve could not bind its ports")

    monkeypatch.setattr(LocalStack, "_start_serve", start_serve)
    monkeypatch.setattr(LocalStack, "_stop_serve_attempt", lambda self: events.append("ray down"))
    monkeypatch.setattr(stack_mod, "_stop_ray", lambda graceful: events.append("stop"))
    return LocalStack(triton=_FakeTriton(), **kwargs), attempts, events


def test_a_taken_port_is_retried_on_new_ports(monkeypatch) -> None:
    local, attempts, events = _fake_stack(monkeypatch, clashes=1)
    local.start()
    assert attempts == [(41000, 41001), (41002, 41003)]
    assert (local.http_port, local.grpc_port) == (41002, 41003)
    assert events == ["ray down"]  # the failed attempt's Ray went down before the next one


def test_retries_are_bounded(monkeypatch) -> None:
    local, attempts, events = _fake_stack(monkeypatch, clashes=BIND_ATTEMPTS)
    with pytest.raises(PortTaken):
        local.start()
    assert len(attempts) == BIND_ATTEMPTS and len(set(attempts)) == BIND_ATTEMPTS
    assert events[-1] == "stop"  # and the stack was stopped, not left half-started


def test_ports_given_explicitly_are_not_retried(monkeypatch) -> None:
    local, attempts, _ = _fake_stack(monkeypatch, clashes=1, http_port=8100, grpc_port=9100)
    with pytest.raises(PortTaken):
        local.start()
    assert attempts == [(8100, 9100)]


SCRIPT = textwrap.dedent(
    """
    import socket
    import urllib.request

    from ensemble import ports
    from preprocess_service.stack import LocalStack

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    real_free_ports, calls = ports.free_ports, []

    def first_pick_is_taken(n):  # another process wins the race for the first port picked
        calls.append(1)
        return [taken_port, *real_free_ports(n - 1)] if len(calls) == 1 else real_free_ports(n)

    ports.free_ports = first_pick_is_taken
    with LocalStack(grpc_port=None) as local:
        assert local.http_port != taken_port
        with urllib.request.urlopen(local.http_url + "/readyz", timeout=30) as reply:
            print("ready", reply.status, local.http_port, taken_port)
    """
)


@pytest.mark.slow
@pytest.mark.integration
def test_a_port_taken_for_real_is_retried() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "ready 200" in done.stdout, done.stdout + done.stderr[-2000:]


def test_ports_picked_together_are_distinct() -> None:
    """Every socket is held until all are picked, so the OS cannot hand the same port out twice (picked one
    after another, it once gave Triton one port for HTTP and metrics, and Triton refused to start)."""
    picked = ports.free_ports(200)
    assert len(set(picked)) == 200


class _ReusingOS:
    """An OS that binds port 0 to the lowest port no socket holds now, as Linux may right after a close."""

    def __init__(self) -> None:
        self.held: set[int] = set()

    def socket(self, *_args):
        held = self.held

        class Socket:
            port = 0

            def __enter__(self):
                return self

            def __exit__(self, *_exc) -> None:
                held.discard(self.port)

            def bind(self, _address) -> None:
                self.port = min(set(range(40000, 40100)) - held)
                held.add(self.port)

            def getsockname(self):
                return (ports.HOST, self.port)

        return Socket()


def test_ports_are_held_until_all_are_picked(monkeypatch) -> None:
    """Deterministic: under an OS that reuses a port as soon as it is released, picking one at a time gives
    the same port thrice, and free_ports(3) three distinct ones."""
    fake = _ReusingOS()
    monkeypatch.setattr(ports, "socket", SimpleNamespace(socket=fake.socket, AF_INET=0, SOCK_STREAM=0))
    assert [ports.free_port() for _ in range(3)] == [40000, 40000, 40000]  # the hazard the fake models
    assert ports.free_ports(3) == [40000, 40001, 40002]
    assert not fake.held  # every socket is closed again
