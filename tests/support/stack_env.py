"""The environment LocalStack hands Ray's processes, read without starting Ray: RayNode.start is replaced by
a fake that raises with the named variables as they stand at that moment, and the stop that follows never
reaches Ray (in a test process Ray may be the session's gateway stack)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pytest

from preprocess_service import stack as stack_mod
from preprocess_service.ray_node import RayNode


class _Started(Exception):
    """Raised by the fake Ray start with the environment Ray's processes would have inherited."""


class _FakeTriton:
    grpc_url = "127.0.0.1:1"


def env_at_ray_start(monkeypatch, names: Iterable[str], **stack_kwargs: Any) -> dict[str, str | None]:
    """`names` as a LocalStack built with `stack_kwargs` sets them for Ray's processes."""
    names = list(names)

    def start(self, ray) -> None:
        raise _Started({name: os.environ.get(name) for name in names})

    monkeypatch.setattr(RayNode, "start", start)
    monkeypatch.setattr(stack_mod, "_stop_ray", lambda graceful: None)
    with pytest.raises(_Started) as started:
        stack_mod.LocalStack(triton=_FakeTriton(), http_port=8100, grpc_port=None, **stack_kwargs).start()
    return started.value.args[0]
