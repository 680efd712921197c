"""Reading what a monitoring stream sent: its events are dicts with a `type` (score, alert, ...)."""

from __future__ import annotations


def kinds(events: list[dict], kind: str) -> list[dict]:
    """The events of one type, in the order they came."""
    return [e for e in events if e["type"] == kind]
