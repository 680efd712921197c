"""Every input path a client can send, judged separately, with subject-bootstrap 95% confidence intervals.

    avpenet evaluate --data DIR --json OUT.json --paths

Why: the gateway accepts a video upload (tracked by the real FaceLandmarker), audio with a landmarks file
(privacy mode), audio alone or landmarks alone, and a model can be good on one and poor on another. Each path
rebuilds a clip's labels.csv row as that upload would be (the other columns blanked) and decodes it with the
one dataset reader (``features.cache.decode_row``: the gateway's precedence), so:
- ``video``: the MP4 through the tracker, with the clip's audio (its WAV when delivered, else the MP4's);
- ``audio_landmarks``: the WAV and the ``.npz`` track; ``audio_only``: the WAV; ``landmarks_only``: the .npz.
A path is judged on the clips that can take it (no MP4: no video path), and on every one of them: a clip
whose face is never found is scored with its visual modality masked, as the gateway scores it.
Confidence intervals resample SUBJECTS with replacement (clips of one subject are not independent); below
MIN_BOOTSTRAP_SUBJECTS subjects ``ci95`` is null and ``ci95_not_given`` says why: resampling one subject gives
a zero-width "95% CI", and a few give one that only lists them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

PATHS = {  # path -> (columns kept, column that must be present)
    # the MP4 wins over the .npz (the reader's precedence), so the row stays whole and the cached tracking is
    # reused: blanking `visual` would change the cache signature and track every MP4 again
    "video": (("audio", "visual", "video"), "video"),
    "audio_landmarks": (("audio", "visual"), "visual"),
    "audio_only": (("audio",), "audio"),
    "landmarks_only": (("visual",), "visual"),
}
BOOTSTRAP = 1000
MIN_BOOTSTRAP_SUBJECTS = 5  # fewer: no interval (docs/EVALUATION.md)


def path_row(row: dict[str, str], path: str) -> dict[str, str] | None:
    """The labels row as the upload of this path would carry it; None when the clip cannot take the path."""
    keep, required = PATHS[path]
    if not (row.get(required) or "").strip():
        return None
    return {**row, **{c: (row[c] if c in keep else "") for c in ("audio", "visual", "video")}}


def subject_resamples(subjects: Sequence[str], n: int = BOOTSTRAP, seed: int = 0) -> Iterator[np.ndarray]:
    """`n` index arrays, each the clips of as many subjects as there are, drawn with replacement: a subject's
    clips are resampled together (they are not independent)."""
    subjects = np.asarray(subjects)
    ids = np.unique(subjects)
    members = [np.flatnonzero(subjects == s) for s in ids]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield np.concatenate([members[i] for i in rng.integers(len(ids), size=len(ids))])


def subject_bootstrap(
    pred: np.ndarray, true: np.ndarray, subjects: Sequence[str], n: int = BOOTSTRAP, seed: int = 0
) -> dict[str, list[float]]:
    """95% percentile intervals of MAE, Pearson r and 3-class accuracy over subject resamples."""
    from avpenet.predict import level_index

    hit = level_index(pred) == level_index(true)
    draws: dict[str, list[float]] = {"mae": [], "pearson_r": [], "accuracy_3class": []}
    for idx in subject_resamples(subjects, n, seed):
        p, t = pred[idx], true[idx]
        draws["mae"].append(float(np.abs(p - t).mean()))
        ok = p.std() > 0 and t.std() > 0
        draws["pearson_r"].append(float(np.corrcoef(p, t)[0, 1]) if ok else float("nan"))
        draws["accuracy_3class"].append(float(hit[idx].mean()))
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}


def subject_ci(pred: np.ndarray, true: np.ndarray, subjects: Sequence[str]) -> dict:
    """{"ci95": subject_bootstrap's intervals}, or {"ci95": None, "ci95_not_given": why} when there are fewer
    than MIN_BOOTSTRAP_SUBJECTS subjects."""
    n = len(set(subjects))
    if n < MIN_BOOTSTRAP_SUBJECTS:
        need = f"a subject-bootstrap interval needs at least {MIN_BOOTSTRAP_SUBJECTS}"
        return {"ci95": None, "ci95_not_given": f"{n} subject{'' if n == 1 else 's'}; {need}"}
    return {"ci95": subject_bootstrap(pred, true, subjects)}


def path_clips(data_dir: Path, rows: list[dict[str, str]], path: str) -> list:
    """The `rows` that can take `path`, each decoded as that upload would be."""
    from avpenet import data

    return [data.load_clip(data_dir, r, keep_track=False) for row in rows if (r := path_row(row, path))]


def clip_scores(model, clips: list, modality: str) -> np.ndarray:
    """The served score of each clip (its inputs restricted to the model's modality)."""
    from avpenet import contract as C
    from avpenet.predict import predict_clips
    from avpenet.train import restrict

    if not clips:
        return np.zeros(0)
    return predict_clips(model, [restrict(dict(c.inputs), modality) for c in clips])[C.SCORE.name]


def path_scores(model, data_dir: Path, rows: list[dict[str, str]], path: str, modality: str):
    """(clips, scores) of the `rows` that can take `path`, each decoded as that upload would be and scored."""
    clips = path_clips(data_dir, rows, path)
    return clips, clip_scores(model, clips, modality)


def evaluate_paths(model, data_dir: Path, rows: list[dict[str, str]], subjects: Sequence[str], modality: str):
    """{path: metrics + ci95 + n_clips + clips whose tracked face was never found} for the test subjects."""
    from avpenet.predict import regression_metrics

    keep = set(subjects)
    mine = [row for row in rows if row["subject_id"] in keep]
    out: dict[str, dict] = {}
    for path in PATHS:
        clips, pred = path_scores(model, data_dir, mine, path, modality)
        if not clips:
            continue
        true = np.array([c.score for c in clips])
        who = [c.subject_id for c in clips]
        no_face = [c.clip_id for c in clips if path == "video" and not _has_face(c)]  # only it tracks
        out[path] = {
            **regression_metrics(pred, true),
            **subject_ci(pred, true, who),
            "n_subjects": len(set(who)),
            "face_never_found": no_face,
        }
    return out


def _has_face(clip) -> bool:
    from avpenet import contract as C

    return bool(clip.inputs[C.FRAME_MASK.name].any())
