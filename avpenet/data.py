"""Clips and windows for training and evaluation, read from a dataset directory (labels.csv + media).

Every window is built by the same feature code the gateway calls (``avpenet.features``): decoded 16 kHz
audio cut into RMS-normalised 3 s windows, per-frame landmark/AU features with their validity mask, aligned on
the 1 s grid. A clip keeps its face track so evaluation can occlude it, and its normalised audio windows so
training and evaluation can add hospital noise. The split is by SUBJECT (no subject in two parts), stratified
by age group, fixed by a seed, and written as ``split.json`` ({"train": [...], "val": [...], "test": [...]}).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet.durable import replace_text

SPLIT_FILE = "split.json"
PLAN_FILE = "plan.json"  # `avpenet synth` writes it: the plan the set's subjects come from
PLAN_KEYS = ("generator", "seed", "n_subjects")  # what decides who subject S0001... is (synth.dataset)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / val / test subjects per age group


@dataclass
class Clip:
    """One labelled clip and its model inputs (one row per window, keyed by contract tensor names)."""

    clip_id: str
    subject_id: str
    age_group: str  # contract.AGE_GROUPS
    score: float  # rater-median label, 0-10
    inputs: dict[str, np.ndarray]  # features.windows.inputs_from_features of the decoded clip
    track: object | None = None  # the FaceTrack (kept for occlusion robustness); None = no face track
    tracked_on: str | None = None  # the machine that tracked its video (cache.Decoded); None: no video

    @property
    def level(self) -> int:
        return C.LEVELS.index(C.level_of(self.score))

    @property
    def n_windows(self) -> int:
        return len(self.inputs[C.AGE_GROUP.name])


def visual_inputs(
    features: np.ndarray, frame_mask: np.ndarray, n_windows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(visual_features [N, 30, F], frame_mask [N, 30]) of per-frame features on the shared 1 s grid, N fixed
    (used to swap in the features of an altered face track, e.g. an occluded one)."""
    from avpenet.features.windows import inputs_from_features

    win = inputs_from_features(None, features, frame_mask, 0)
    feats = np.zeros((n_windows, C.FRAMES_PER_WINDOW, C.VISUAL_FEATURE_DIM), np.float32)
    mask = np.zeros((n_windows, C.FRAMES_PER_WINDOW), np.float32)
    k = min(n_windows, len(win[C.FRAME_MASK.name]))
    feats[:k] = win[C.VISUAL_FEATURES.name][:k]
    mask[:k] = win[C.FRAME_MASK.name][:k]
    return feats, mask


# --- loading a dataset directory -------------------------------------------------------------------------


def read_labels(data_dir: Path) -> list[dict[str, str]]:
    """Rows of DIR/labels.csv, checked (one reader for the cache, training and evaluation)."""
    from avpenet.features.cache import read_labels as read

    return read(data_dir)


def _decode(data_dir: Path, row: dict[str, str]):
    """(wave, features, mask, track, tracked_on) of a clip: from the feature cache when it is up to date
    (``avpenet features``), else decoded now by the cache's own reader (``cache.decode``: the gateway's
    precedence, the MP4 through the real tracker before any .npz track)."""
    from avpenet.features import cache
    from avpenet.features.visual import frame_features

    if cache.is_fresh(data_dir, row):
        c = cache.load_clip(cache.clip_path(data_dir, row["clip_id"]))
        return c.wave, c.features, c.mask, c.track, c.tracked_on
    d = cache.decode(data_dir, row)
    features, mask = frame_features(d.track) if d.track is not None else (None, None)
    return d.wave, features, mask, d.track, d.tracked_on


def load_clip(data_dir: Path, row: dict[str, str], keep_track: bool = True) -> Clip:
    """One labels.csv row as model inputs, built by the shared feature code (the calls the gateway makes).

    keep_track: also keep the clip's face track (the one its features came from), for occlusion
    augmentation and robustness tests.
    """
    from avpenet.features.windows import inputs_from_features

    data_dir = Path(data_dir)
    wave, features, mask, track, tracked_on = _decode(data_dir, row)
    return Clip(
        clip_id=row["clip_id"],
        subject_id=row["subject_id"],
        age_group=row["age_group"],
        score=float(row["score"]),
        inputs=inputs_from_features(wave, features, mask, row["age_group"]),
        track=track if keep_track else None,
        tracked_on=tracked_on,
    )


def load_clips(data_dir: Path, subjects: Iterable[str] | None = None, progress: bool = True) -> list[Clip]:
    """Every clip of the dataset (or of the given subjects), decoded, with a progress bar."""
    from tqdm import tqdm

    rows = read_labels(data_dir)
    if subjects is not None:
        keep = set(subjects)
        rows = [r for r in rows if r["subject_id"] in keep]
    return [
        load_clip(data_dir, r) for r in tqdm(rows, desc="loading clips", unit="clip", disable=not progress)
    ]


# --- subject-independent split ---------------------------------------------------------------------------


def make_split(rows: Sequence[dict[str, str]], seed: int) -> dict[str, list[str]]:
    """80/10/10 of the SUBJECTS of each age group (train/val/test), shuffled by seed; every part non-empty
    when the group has at least three subjects."""
    by_age: dict[str, list[str]] = {}
    for r in rows:
        subjects = by_age.setdefault(r["age_group"], [])
        if r["subject_id"] not in subjects:
            subjects.append(r["subject_id"])
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for age in sorted(by_age):
        subjects = sorted(by_age[age])
        rng.shuffle(subjects)
        n = len(subjects)
        n_val = max(1, round(n * SPLIT_FRACTIONS[1])) if n >= 3 else 0
        n_test = max(1, round(n * SPLIT_FRACTIONS[2])) if n >= 3 else 0
        split["val"] += subjects[:n_val]
        split["test"] += subjects[n_val : n_val + n_test]
        split["train"] += subjects[n_val + n_test :]
    return {k: sorted(v) for k, v in split.items()}


def labels_digest(data_dir: Path) -> str:
    """sha256 of labels.csv: recognises the dataset a model was trained on, wherever it lies on disk."""
    import hashlib

    return hashlib.sha256((Path(data_dir) / "labels.csv").read_bytes()).hexdigest()


def write_plan(data_dir: Path, plan: dict) -> None:
    replace_text(Path(data_dir) / PLAN_FILE, json.dumps(plan, sort_keys=True) + "\n")


def read_plan(data_dir: Path) -> dict | None:
    """The generating plan a synthetic set records; None for other data and sets made before it was."""
    path = Path(data_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a plan.json ({exc})") from None
    return plan if isinstance(plan, dict) else None


def same_subjects(a: dict | None, b: dict | None) -> bool:
    """Two sets of one plan (any of its parts rendered) hold the same subjects under the same ids, though
    their labels.csv differ; ids alone cannot tell, as every seed numbers its subjects alike."""
    return bool(a and b) and all(k in a and k in b and a[k] == b[k] for k in PLAN_KEYS)


def checkpoint_split(checkpoint: Path, config: dict, data_dir: Path) -> tuple[Path, str] | None:
    """(the checkpoint's own split.json, why) when `data_dir` holds the subjects it was trained and validated
    on: the very data (same labels.csv digest) or another render of that data's plan (e.g. `avpenet synth
    --parts val`; a checkpoint recording no plan is matched through `whole_render`); None for other data, and
    for a set without plan.json whose digest differs."""
    own = Path(checkpoint) / SPLIT_FILE
    if not own.exists():
        return None
    trained = config.get("data") or {}
    plan = read_plan(data_dir)
    seen = seen_as(labels_digest(data_dir), plan, trained.get("labels_sha256"), trained.get("plan"))
    if seen is None:
        return None
    if seen == "labels":
        return own, "the data it was trained on"
    return own, f"a render of the plan it was trained on (seed {plan['seed']}, {plan['n_subjects']} subjects)"


def split_for(
    data_dir: Path, checkpoint: Path, config: dict, given: Path | None = None
) -> tuple[Path, str, str] | None:
    """(split.json, where it came from, why) for the subjects of `data_dir` a checkpoint is judged (test) or
    calibrated (val) on: `given` (--split), else DIR/split.json, else the checkpoint's own when DIR holds the
    subjects it was trained on (checkpoint_split, the only one with a why); None for data it never saw.
    evaluate and calibrate both ask here, so they cannot disagree on a set."""
    if given is not None:
        return Path(given), str(given), ""
    path = Path(data_dir) / SPLIT_FILE
    if path.exists():
        return path, str(path), ""
    own = checkpoint_split(checkpoint, config, data_dir)
    return None if own is None else (own[0], "the checkpoint's split.json", own[1])


def seen_as(
    digest: str | None, plan: dict | None, other_digest: str | None, other_plan: dict | None
) -> str | None:
    """How a set (labels digest, plan) holds another's subjects: "labels" (the same labels.csv), "plan" (a
    render of the same plan, any parts; when the other records no plan, as a checkpoint trained before plans
    were, its digest is matched against a whole render of ours), or None."""
    if digest is not None and digest == other_digest:
        return "labels"
    if same_subjects(plan, other_plan) or (other_plan is None and _is_whole_render(plan, other_digest)):
        return "plan"
    return None


def _is_whole_render(plan: dict | None, digest: str | None) -> bool:
    from avpenet.synth.dataset import GENERATOR, full_labels_digest

    if not plan or plan.get("generator") != GENERATOR or "render" not in plan or not digest:
        return False
    try:
        return full_labels_digest(plan) == digest
    except (KeyError, TypeError, ValueError):  # a plan.json that names no plan this generator can make
        return False


def write_split(split: dict[str, list[str]], path: Path) -> None:
    replace_text(Path(path), json.dumps(split, indent=1) + "\n")  # never half: which subjects are test


def split_parts(path: Path) -> dict[str, list[str]]:
    """A split.json's parts as written (no part added, nothing checked); ValueError naming the file."""
    try:
        split = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a split.json ({exc})") from None
    if not isinstance(split, dict):
        raise ValueError(f"{path} is not a split.json (a JSON object of train/val/test subject lists)")
    return split


def read_split(path: Path) -> dict[str, list[str]]:
    split = split_parts(path)
    for part in ("train", "val", "test"):
        split.setdefault(part, [])
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        if overlap := set(split[a]) & set(split[b]):
            raise ValueError(f"{path}: {len(overlap)} subjects are in both {a} and {b}")
    return split
