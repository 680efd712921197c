"""Stepping an asyncio event loop in tests, so orderings follow the loop and not the clock."""

from __future__ import annotations

import asyncio


async def settle(rounds: int = 5) -> None:
    """Let every task that is ready run (a few turns of the loop: a woken task may wake another)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
