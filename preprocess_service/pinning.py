"""Version pins and the versions that actually produced an answer.

A request may pin the ensemble or any part (`model_versions: {"fusion": "2"}`). Triton serves one version per
part (`version_policy: latest 1`) and the ensemble's steps use the newest served one, so a pin can only be
honoured when that version is the one served: an unknown or unserved version is 404 / NOT_FOUND naming it.
The ensemble pin is also passed to Triton with the call. The versions reported with an answer are read fresh
from Triton's repository index right before and right after the call; if a rollout changed them in between,
the call is repeated (the answer could have come from either), so the report is never a stale cache.
"""

from __future__ import annotations

from collections.abc import Mapping

from preprocess_service.errors import NotFound

Served = dict[str, list[str]]  # model -> READY versions, ascending


def served(rows: list[dict[str, str]]) -> Served:
    """READY versions per model from `TritonClient.repository()` rows."""
    out: Served = {}
    for row in rows:
        if row.get("state") == "READY" and str(row.get("version", "")).isdigit():
            out.setdefault(row["name"], []).append(str(row["version"]))
    return {name: sorted(v, key=int) for name, v in out.items()}


def in_use(ready: Served) -> dict[str, str]:
    """The version each model runs now: the newest READY one (what an ensemble step with -1 uses)."""
    return {name: versions[-1] for name, versions in ready.items() if versions}


def check(pins: Mapping[str, str], ready: Served, known: set[str]) -> None:
    """NotFound naming the first pin that cannot be honoured (unknown model, or a version not in use)."""
    current = in_use(ready)
    for name, version in sorted(pins.items()):
        if name not in known and name not in current:
            raise NotFound(f"model_versions: no model named {name!r} (served: {', '.join(sorted(current))})")
        if current.get(name) != version:
            now = current.get(name, "none")
            raise NotFound(f"model_versions: {name} version {version} is not served (serving version {now})")
