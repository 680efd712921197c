"""Resumable, subject-ordered AVPE-Synth runs: which clips are finished, and which subjects come first.

Rendering and tracking the default set takes about two hours on 2 cores, so a run stopped by a time limit or
a reboot must not start over. `generate` records each finished clip's truth row in DIR/.progress/clips/ once
the clip's files are written (``record``); ``--resume`` skips those clips and refuses a folder made with
another seed, size or render choice. Records and run.json are replaced whole and durably (avpenet.durable);
a record that cannot be read (cut by a crash before they were) is dropped and its clip made again.
``subject_order`` lists the subjects of chosen parts of a split.json in that order (e.g. test, val, train: a
run stopped for time then leaves whole held-out subjects, not a thin slice of every subject).
"""

from __future__ import annotations

import json
from pathlib import Path

from avpenet.durable import replace_text

PROGRESS_DIR = ".progress"  # run.json, clips/<clip_id>.json (one truth row per finished clip)
RUN_FILE = "run.json"  # the options whose plan the finished clips belong to
CLIPS_DIR = "clips"


def start(out: Path, params: dict, resume: bool) -> dict[str, dict]:
    """The truth rows of the clips already finished in `out` (only when resuming).

    A fresh run forgets earlier records; a resumed one must have been started with the same `params`.
    """
    folder = Path(out) / PROGRESS_DIR
    (folder / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    run = folder / RUN_FILE
    old = json.loads(run.read_text()) if run.exists() else None
    if resume and old is not None and old != params:
        raise ValueError(
            f"{out} was generated with {old}, not {params}: resume with the same options or use another --out"
        )
    records = sorted((folder / CLIPS_DIR).glob("*.json"))
    if not resume:
        for p in records:
            p.unlink()
        records = []
    replace_text(run, json.dumps(params, sort_keys=True) + "\n")  # half of it would stop every --resume
    return {p.stem: truth for p in records if (truth := _read(p)) is not None}


def _read(record: Path) -> dict | None:
    """A finished clip's truth row; None for a record left empty or cut (the clip is made again)."""
    try:
        truth = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return truth if isinstance(truth, dict) else None


def record(out: Path, clip_id: str, truth: dict) -> None:
    """Mark `clip_id` finished (after its files are written); whole and durable, so neither a kill nor a
    power loss leaves half a record."""
    path = Path(out) / PROGRESS_DIR / CLIPS_DIR / f"{clip_id}.json"
    replace_text(path, json.dumps(truth, sort_keys=True) + "\n")


def subject_order(split_path: Path, parts: list[str]) -> list[str]:
    """The subjects of `parts` of a split.json, part by part in the given order (each part as listed)."""
    from avpenet.data import split_parts

    split = split_parts(split_path)
    unknown = [p for p in parts if p not in split]
    if unknown:
        raise ValueError(f"{split_path} has no part {', '.join(unknown)} (parts: {', '.join(split)})")
    order: list[str] = []
    for part in parts:
        order += [s for s in split[part] if s not in order]
    return order
