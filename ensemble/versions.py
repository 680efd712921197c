"""Numbered version folders of a Triton model: add only what changed, describe each in a manifest, prune.

A part gets version N+1 only when the files it would serve differ from version N: the backend model.py by
sha256, model.onnx by structure and by float constants beyond CPU rounding (graph_diff.py). So re-exporting
the same checkpoint is a no-op on any CPU, retraining one part bumps that part alone, and a changed backend
bumps its part. The new version's manifest says what changed.
Triton serves the newest version (`version_policy: latest { num_versions: 1 }`, see configs.py); older folders
stay on disk for rollback until pruned. A number is never reused: HIGH_WATER records the highest published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.message import DecodeError

from avpenet import contract
from ensemble import graph_diff
from ensemble.publish import Publication

MANIFEST = "manifest.json"
# Beside config.pbtxt (Triton reads only that, configs/ and numbered folders): the highest version published.
HIGH_WATER = "highest_version.json"
HIGH_WATER_NOTE = (
    "Version numbers up to this one were published. The next version is numbered above it even when those "
    "folders were deleted (a rollback) or pruned, so a number never names two models. Do not lower it."
)
DEFAULT_KEEP = 2  # newest + one to roll back to; each part version is a few MB of ONNX
_NOT_ONNX = (DecodeError, ValueError)  # bytes that are not a model (a truncated file, test stand-ins)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def versions(model_dir: Path) -> list[int]:
    """Version numbers present on disk, ascending (Triton's rule: folders named by a positive integer)."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )


def latest(model_dir: Path) -> int | None:
    found = versions(model_dir)
    return found[-1] if found else None


def read_manifest(model_dir: Path, version: int) -> dict:
    path = model_dir / str(version) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def served_part(repo: Path, part: contract.ModelSpec) -> contract.ModelSpec:
    """`part` with the outputs its newest version on disk has (its manifest lists them): after a rollback to a
    version exported before an output was added (fusion's adult_probability), its config must not name it."""
    version = latest(Path(repo) / part.name)
    listed = read_manifest(Path(repo) / part.name, version).get("outputs") if version is not None else None
    outputs = part.outputs if listed is None else tuple(t for t in part.outputs if t.name in listed)
    return part if outputs == part.outputs else dataclasses.replace(part, outputs=outputs)


def changed_files(folder: Path, files: dict[str, bytes]) -> dict[str, list[str]]:
    """{file name: reasons} for each of `files` that differs from what `folder` serves (empty: same part)."""
    changes: dict[str, list[str]] = {}
    for name, data in sorted(files.items()):
        path = folder / name
        if not path.exists():
            changes[name] = ["not in the previous version"]
            continue
        served = path.read_bytes()
        if served == data:
            continue
        if name.endswith(".onnx"):
            try:
                reasons = graph_diff.differences(data, served)
            except _NOT_ONNX as exc:
                reasons = [f"not comparable as ONNX ({type(exc).__name__})"]
        else:
            reasons = ["sha256 differs"]
        if reasons:
            changes[name] = reasons
    return changes


def highest_used(model_dir: Path) -> int:
    """The highest version number `model_dir` ever published (0: none): its record, or its newest folder.

    A rollback deletes folder N+1 but not the record, so the next export numbers N+2: a client pinned to N+1,
    a cache or an audit record never gets another model under that number."""
    path = model_dir / HIGH_WATER
    try:
        recorded = int(json.loads(path.read_text())["highest_version"]) if path.is_file() else 0
    except (ValueError, KeyError, TypeError) as exc:  # a merge conflict, a hand edit: refused, not guessed
        raise ValueError(
            f"{path} is not a high-water record ({type(exc).__name__}: {exc}); restore it from version "
            'control or write {"highest_version": N}, N the highest version this part ever published'
        ) from None
    return max(recorded, latest(model_dir) or 0)


def served_record(repo: Path, source: dict | None = None) -> tuple[Path, str] | None:
    """(path, text) of the ensemble's record `avpenet/1/manifest.json`: `steps_served` names each part's
    newest version on disk, the one its steps serve. `source`: the run just exported (a fresh record);
    without it the record's other fields stay (None when there is no record to rewrite), so after a rollback
    or a quantisation it names what is served, not a deleted version."""
    path = Path(repo) / contract.ENSEMBLE.name / "1" / MANIFEST
    if source is None and not path.is_file():
        return None
    try:
        record = {"source": source} if source is not None else dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # a merge conflict, a hand edit: refused, not guessed
        raise ValueError(
            f"{path} is not the ensemble's record ({exc}); restore it from version control"
        ) from None
    served = {part.name: latest(Path(repo) / part.name) for part in contract.PARTS}
    record.update(model=contract.ENSEMBLE.name, version=1, steps_served=served)
    return path, json.dumps(record, indent=2, sort_keys=True) + "\n"


def record_highest(tx: Publication, model_dir: Path) -> None:
    """Write `model_dir`'s high-water mark (after its new version is in place)."""
    record = {"highest_version": highest_used(model_dir), "note": HIGH_WATER_NOTE}
    tx.write_text(model_dir / HIGH_WATER, json.dumps(record, indent=2, sort_keys=True) + "\n")


def stage_version(
    tx: Publication, model_dir: Path, files: dict[str, bytes], manifest: dict
) -> tuple[int, Path | None]:
    """Write `files` as the next version into a hidden folder of `model_dir` unless its newest version serves
    the same part (changed_files); (version, the hidden folder or None when nothing changed).

    `tx.move` it to `model_dir / str(version)` to publish it: a polling or reloading Triton never sees a
    half-written version."""
    hashes = {name: sha256_bytes(data) for name, data in sorted(files.items())}
    current = latest(model_dir)
    changes = changed_files(model_dir / str(current), files) if current is not None else {}
    if current is not None and not changes:
        return current, None
    version = highest_used(model_dir) + 1
    record = {
        "model": model_dir.name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": hashes,
        "previous_version": current,
        "changes_from_previous": changes,
        **manifest,
    }
    staging = model_dir / f".staging-{version}"
    tx.stage_folder(
        staging, {**files, MANIFEST: (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()}
    )
    return version, staging


def add_version(model_dir: Path, files: dict[str, bytes], manifest: dict) -> tuple[int, bool]:
    """`stage_version` and publish it at once (one part alone); (version, created)."""
    with Publication(model_dir.parent) as tx:
        tx.make_dirs(model_dir)
        version, staging = stage_version(tx, model_dir, files, manifest)
        if staging is not None:
            tx.move(staging, model_dir / str(version))
        record_highest(tx, model_dir)
    return version, staging is not None


def prune(model_dir: Path, keep: int = DEFAULT_KEEP, tx: Publication | None = None) -> list[int]:
    """Delete all but the newest `keep` versions (within `tx`: once it all landed); returns their numbers."""
    if keep < 1:
        raise ValueError("keep must be >= 1: the newest version is the one being served")
    removed = versions(model_dir)[:-keep]
    with contextlib.nullcontext(tx) if tx is not None else Publication(model_dir.parent) as publication:
        for version in removed:
            publication.retire(model_dir / str(version))
    return removed
