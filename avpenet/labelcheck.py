"""Checks of a dataset's labels.csv rows before anything is decoded or trained.

A hospital assembling its own folder makes the mistakes a generator never makes: a file path that does not
exist, a clip listed twice, an age group spelled its own way, a score on another scale. ``features``,
``train`` and ``evaluate`` all read labels.csv through ``features.cache.read_labels``, which calls
``check_rows``: every problem is reported at once, each with its CSV line number (the header is line 1) and
what to fix, before any decoding or training starts.
"""

from __future__ import annotations

import math
from pathlib import Path

from avpenet import contract as C

MEDIA_COLUMNS = ("audio", "visual", "video")
RATER_COLUMNS = ("rater_1", "rater_2", "rater_3")
MAX_LISTED = 25  # problems printed; the rest are counted


class LabelsError(ValueError):
    """labels.csv rows that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        listed = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(
            f"{path}: {len(problems)} problem(s), nothing was decoded or trained:\n  "
            + "\n  ".join(listed)
            + more
        )


def _label_problem(name: str, value: str | None, required: bool) -> str | None:
    """Why a score-like cell is unusable (None when it is fine)."""
    text = (value or "").strip()
    if not text:
        return f"{name} is empty" if required else None
    try:
        x = float(text)
    except ValueError:
        return f"{name} {text!r} is not a number"
    if not math.isfinite(x) or not C.SCORE_MIN <= x <= C.SCORE_MAX:
        return f"{name} {text} is outside {C.SCORE_MIN:g}-{C.SCORE_MAX:g} (the 0-10 pain scale)"
    return None


def _media_problems(data_dir: Path, row: dict[str, str]) -> list[str]:
    out = []
    given = [c for c in MEDIA_COLUMNS if (row.get(c) or "").strip()]
    if not given:
        out.append("no audio, visual or video file: a clip needs at least one")
    root = data_dir.resolve()
    for col in given:
        rel = row[col].strip()
        path = (data_dir / rel).resolve()
        if not path.is_relative_to(root):
            out.append(f"{col} path {rel!r} points outside the dataset folder")
        elif not path.is_file():
            out.append(f"{col} file {rel!r} does not exist")
    return out


def row_problems(data_dir: Path, row: dict[str, str], fields: list[str]) -> list[str]:
    """Every problem of one row (without duplicate detection, which needs all rows)."""
    out = []
    if not (row.get("clip_id") or "").strip():
        out.append("clip_id is empty")
    if "subject_id" in fields and not (row.get("subject_id") or "").strip():
        out.append("subject_id is empty (the split keeps each subject's clips together)")
    age = (row.get("age_group") or "").strip()
    if age not in C.LABELLED_AGE_GROUPS:
        out.append(f"age_group {age!r} is not one of {', '.join(C.LABELLED_AGE_GROUPS)}")
    if "score" in fields:
        out.append(_label_problem("score", row.get("score"), required=True))
    out += [_label_problem(c, row.get(c), required=False) for c in RATER_COLUMNS if c in fields]
    level = (row.get("level") or "").strip()
    if "level" in fields and level and level not in C.LEVELS:
        out.append(f"level {level!r} is not one of {', '.join(C.LEVELS)}")
    out += _media_problems(data_dir, row)
    return [p for p in out if p]


def check_rows(path: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    """Raise LabelsError listing every unusable row of labels.csv at `path` (line numbers as in an editor)."""
    data_dir = Path(path).parent
    problems: list[str] = []
    first_line: dict[str, int] = {}
    age_of: dict[str, tuple[str, int]] = {}  # subject -> (age group, line): the split groups subjects by it
    for i, row in enumerate(rows):
        line = i + 2  # the header is line 1
        cid = (row.get("clip_id") or "").strip()
        found = row_problems(data_dir, row, fields)
        if cid and cid in first_line:
            found.insert(0, f"duplicate clip_id {cid!r} (first at line {first_line[cid]})")
        first_line.setdefault(cid, line)
        subject, age = (row.get("subject_id") or "").strip(), (row.get("age_group") or "").strip()
        if subject and subject in age_of and age_of[subject][0] != age:
            seen, at = age_of[subject]
            found.append(
                f"subject {subject!r} is {age!r} here and {seen!r} at line {at}: one age group per subject"
            )
        age_of.setdefault(subject, (age, line))
        problems += [f"line {line} (clip {cid or '?'}): {p}" for p in found]
    if problems:
        raise LabelsError(Path(path), problems)


MIN_SUBJECTS_PER_AGE_GROUP = 3  # one each for train, validation and test (docs/DATA.md, README)


def check_split(split: dict[str, list[str]], rows: list[dict[str, str]]) -> None:
    """A subject-independent split needs subjects of every age group for train, validation and test: say so
    when it cannot (a group of one or two subjects would all train, and its patients go unjudged).

    A ValueError, as bad rows are: the data cannot serve the request, so the CLI exits 2 (a user error)."""
    by_age: dict[str, set[str]] = {}
    for r in rows:
        by_age.setdefault(r["age_group"], set()).add(r["subject_id"])
    empty = [part for part in ("train", "val", "test") if not split.get(part)]
    short = [age for age, subjects in sorted(by_age.items()) if len(subjects) < MIN_SUBJECTS_PER_AGE_GROUP]
    if not empty and not short:
        return
    counts = ", ".join(f"{age} {len(s)}" for age, s in sorted(by_age.items())) or "no rows"
    missing = " / ".join(empty) if empty else f"{' or '.join(short)} validation/test"
    what = f"no {missing} subjects"
    raise ValueError(
        f"too few subjects for a subject-independent split: {what}. "
        f"Each age group needs at least {MIN_SUBJECTS_PER_AGE_GROUP} subjects (one each for training, "
        f"validation and test; better 10 or more); labels.csv has {counts}. Add subjects or give --split "
        "split.json."
    )
