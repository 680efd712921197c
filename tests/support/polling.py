"""Waiting for a condition with a deadline: a regression fails naming what it awaited, never hangs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    step_s: float = 0.5,
    ignoring: tuple[type[BaseException], ...] = (),
) -> float:
    """Seconds until `predicate()` held, polled every `step_s`; fails naming `what` after `timeout_s`.

    Exceptions of the `ignoring` types count as "not yet" (a restarting service refuses calls for a while).
    """
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except ignoring:
            pass
        if time.monotonic() - start >= timeout_s:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(step_s)
