"""Stepping an asyncio event loop in tests, so orderings follow the loop and not the clock."""

from __future__ import annotations

import asyncio
import io


async def settle(rounds: int = 5) -> None:
    """Let every task that is ready run (a few turns of the loop: a woken task may wake another)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def within(coro, guard_s: float):
    """`coro`'s result, or AssertionError naming where every task of the loop waits once `guard_s` passes.

    Not asyncio.wait_for: after its timeout it cancels the coroutine and returns what that raises, so code
    that turns a cancellation into its own error (a 503, say) passed the guard as if it had not hung."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=guard_s)
    if done:
        return task.result()
    stacks = io.StringIO()
    for waiting in asyncio.all_tasks():
        if waiting is not asyncio.current_task():
            waiting.print_stack(limit=8, file=stacks)
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: what the cancellation turned into is not the failure
    raise AssertionError(f"still running after the {guard_s:g}-s hang guard; tasks:\n{stacks.getvalue()}")
