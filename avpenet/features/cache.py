"""Feature cache for training: decode + face-track every clip of a dataset once, load it back fast.

Layout under ``DIR/features/``: one uncompressed ``clips/<clip>.npz`` per clip (wave float32 [S] at 16 kHz,
features [T, VISUAL_FEATURE_DIM] and mask [T], plus a JSON ``meta`` string with the clip's age group, which
sources it came from and their size/mtime) and ``manifest.json`` (counts, for people). A clip is recomputed
only when its cache file is missing, was made by another CACHE_VERSION, or its source files changed — so a
second run is a no-op and an interrupted run resumes. Each file is replaced whole and durably
(``avpenet.durable``); a clip file that cannot be read back (cut by a crash or a copy) is stale: made
again, and decoded afresh till then.

``decode_row`` is the ONE reader of a dataset row, for the cache and for ``avpenet.data`` alike, with the
gateway's source precedence (preprocess_service.extract): the face comes from the MP4 (``video`` column)
through the real FaceLandmarker when there is one — as when an upload carries both video and landmarks —
else from the ``.npz`` track (``visual`` column); the audio from ``audio``, else from the MP4's audio track,
read in the same demux pass as its picture (``avclip``, as the gateway reads a ``clip`` upload).
A rendered clip is tracked ONCE: ``avpenet synth`` tracks each render to write its ``.npz`` and stamps it
(``features/tracked.py``); ``decode_row`` takes that ``.npz`` as the video's tracking when the stamp matches
(same MP4 bytes, file, model and tracking code) and runs the tracker otherwise (a hospital's own files).
The cache keeps the face track itself too (occlusion augmentation and robustness tests need it). A rendered
clip whose tracker finds no face in any frame is listed under ``tracking_failed`` in the manifest (and one
with a face in under half its frames under ``tracking_partial``): it stays in the data with its visual
modality masked, as the gateway masks it, and is never dropped silently.

Why one module over 300 lines: the row reader and the cache built from it share one notion of a row (its
columns, its sources' signature, the gateway's precedence, where its face track came from).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avpenet import contract, machine
from avpenet.durable import replace_bytes, replace_text
from avpenet.errors import InputError
from avpenet.features import tracked

CACHE_VERSION = 4  # bump when decoding or frame_features change meaning (2: track kept; 3: still runs;
# 4: video with non-square pixels tracked as shown, features/pixel_aspect.py)
TRACK_PREFIX = "track_"  # cache arrays holding the FaceTrack fields
PARTIAL_TRACKING = 0.5  # a tracked MP4 with a face in fewer frames than this share is reported
REQUIRED_COLUMNS = ("clip_id", "age_group", "audio", "visual", "video")


@dataclass
class ClipFeatures:
    """One clip's decoded inputs, ready for windows.inputs_from_features."""

    clip_id: str
    age_group: str
    wave: np.ndarray | None  # float32 [S] at contract.SAMPLE_RATE; None: no audio
    features: np.ndarray | None  # float32 [T, VISUAL_FEATURE_DIM]; None: no video/track
    mask: np.ndarray | None  # float32 [T]
    visual_source: str = "none"  # "video" (tracked MP4), "npz" (track file) or "none"
    track: object | None = None  # the FaceTrack the features came from (None: no video/track)
    tracked_on: str | None = None  # the machine whose tracker made a video's face (Decoded.tracked_on)


def cache_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "features"


def clip_path(data_dir: str | os.PathLike, clip_id: str) -> Path:
    """Cache file of a clip; ids with characters unsafe in file names are hashed."""
    name = clip_id if re.fullmatch(r"[A-Za-z0-9_.-]{1,120}", clip_id) and clip_id[0] != "." else (
        "id-" + hashlib.sha256(clip_id.encode()).hexdigest()[:24]
    )  # fmt: skip
    return cache_dir(data_dir) / "clips" / f"{name}.npz"


def read_labels(data_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of DIR/labels.csv (columns contract.LABEL_COLUMNS; REQUIRED_COLUMNS must be there)."""
    path = Path(data_dir) / "labels.csv"
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's "CSV UTF-8" starts with a BOM
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path} lacks column(s) {', '.join(missing)}; expected {', '.join(contract.LABEL_COLUMNS)}"
            )
        rows = list(reader)
    from avpenet.labelcheck import check_rows

    check_rows(path, rows, list(reader.fieldnames or []))  # every bad row, with its line number and reason
    # Values as checked (stripped): "S11" and "S11 " (a spreadsheet's trailing space) are one subject, which
    # the split would otherwise have put in two parts: the same patient in training and in test.
    return [{k: (v or "").strip() for k, v in row.items()} for row in rows]


def _source(data_dir: Path, rel: str | None) -> Path | None:
    rel = (rel or "").strip()
    return data_dir / rel if rel else None


def _signature(data_dir: Path, row: dict[str, str]) -> dict:
    sig: dict = {"version": CACHE_VERSION, "age_group": row["age_group"]}
    if (row.get("video") or "").strip():  # a video's face is its tracking: a new tracker makes it stale
        sig["tracking"] = tracked.TRACKING_VERSION
    for col in ("audio", "visual", "video"):
        p = _source(data_dir, row.get(col))
        if p is not None and p.exists():
            st = p.stat()
            sig[col] = [row[col], st.st_size, st.st_mtime_ns]
        else:
            sig[col] = None
    return sig


def _cached_meta(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # EOF: empty; BadZipFile: cut
        return None


def is_fresh(data_dir: str | os.PathLike, row: dict[str, str]) -> bool:
    meta = _cached_meta(clip_path(data_dir, row["clip_id"]))
    return meta is not None and meta.get("signature") == _signature(Path(data_dir), row)


def decode_row(data_dir: str | os.PathLike, row: dict[str, str]):
    """(wave, track, source) of one labels.csv row with the gateway's precedence (see the module doc)."""
    d = decode(data_dir, row)
    return d.wave, d.track, d.source


@dataclass
class Decoded:
    """decode_row's answer, and where the video's face track came from."""

    wave: np.ndarray | None
    track: object | None
    source: str  # as ClipFeatures.visual_source
    tracked_now: bool  # the tracker ran on the row's MP4 (no stamp matched its `.npz`)
    tracked_on: str | None  # the machine whose tracker made the video's face (None: no MP4)


def decode(data_dir: str | os.PathLike, row: dict[str, str]) -> Decoded:
    """decode_row's reading, with whether the tracker ran now and which machine's tracker made the face."""
    from avpenet.features import audio, avclip, tracker
    from avpenet.features.track import FaceTrack

    data_dir = Path(data_dir)
    contract.age_index(row["age_group"])  # refuse unknown groups early
    audio_path = _source(data_dir, row.get("audio"))
    video_path = _source(data_dir, row.get("video"))
    npz_path = _source(data_dir, row.get("visual"))
    for p in (audio_path, video_path, npz_path):
        if p is not None and not p.exists():
            raise FileNotFoundError(f"clip {row['clip_id']}: {p} does not exist")
    # bytes in memory, as an upload reaches the gateway (its decoders open no files or protocols)
    wave = audio.load_audio(audio_path.read_bytes(), name=audio_path.name) if audio_path else None
    track, source, reused = None, "none", None
    if video_path is not None:
        video = video_path.read_bytes()
        reused = tracked.stamped_track(video, npz_path) if npz_path is not None else None
        track, source = reused[0] if reused else None, "video"
        if wave is None and reused is None:  # the gateway's `clip` upload: sound and picture in one pass
            wave, track = avclip.decode_clip(video, tracker.VideoLimits(), name=video_path.name)
        elif wave is None:
            wave = audio.load_audio(video, name=video_path.name)
        elif reused is None:  # the gateway's `audio` + `video` uploads
            track = tracker.track_video(video)
    elif npz_path is not None:
        track, source = FaceTrack.load_npz(npz_path), "npz"
    tracked_now = video_path is not None and reused is None
    tracked_on = (
        reused[1] if reused else (machine.describe(machine.TRACKING_PACKAGES) if tracked_now else None)
    )
    return Decoded(wave, track, source if track is not None else "none", tracked_now, tracked_on)


def extract_clip(data_dir: str | os.PathLike, row: dict[str, str]) -> dict:
    """Decode, track and featurise one clip, write its cache file; returns a small summary dict."""
    from avpenet.features import audio, visual
    from avpenet.features.windows import frame_window_count

    data_dir = Path(data_dir)
    decoded = decode(data_dir, row)
    wave, track = decoded.wave, decoded.track
    arrays: dict[str, np.ndarray] = {}
    if wave is not None:
        arrays["wave"] = np.asarray(wave, np.float32)
    if track is not None:
        feats, mask = visual.frame_features(track)
        arrays["features"], arrays["mask"] = feats, mask
        arrays.update({TRACK_PREFIX + k: v for k, v in track.arrays().items()})
    n_samples = arrays["wave"].size if "wave" in arrays else 0
    n_frames = arrays["mask"].size if "mask" in arrays else 0
    meta = {
        "clip_id": row["clip_id"],
        "age_group": row["age_group"],
        "visual_source": decoded.source,
        "tracked_now": decoded.tracked_now,
        "tracked_on": decoded.tracked_on,
        "signature": _signature(data_dir, row),
        "windows": max(audio.window_count(n_samples), frame_window_count(n_frames)),
        "frames": n_frames,
        "usable_frames": int(arrays["mask"].sum()) if "mask" in arrays else 0,
        "face_frames": int(track.face_present.sum()) if track is not None else 0,
    }
    out = clip_path(data_dir, row["clip_id"])
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # made whole in memory: a failure mid-way leaves nothing on disk
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    replace_bytes(out, buf.getbuffer())  # a view: the clip's arrays are not held a second time
    return meta


def _worker_init() -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a project dependency
        pass


def _safe_extract(data_dir: str, row: dict[str, str]) -> dict:
    try:
        return extract_clip(data_dir, row)
    except (InputError, FileNotFoundError, ValueError) as exc:
        return {"clip_id": row["clip_id"], "error": f"{type(exc).__name__}: {exc}"}


def build_cache(
    data_dir: str | os.PathLike, *, workers: int = 2, force: bool = False, progress: bool = True
) -> dict:
    """Extract every clip of DIR/labels.csv that is not up to date; returns and writes the manifest."""
    from tqdm import tqdm

    data_dir = Path(data_dir)
    rows = read_labels(data_dir)
    todo = [r for r in rows if force or not is_fresh(data_dir, r)]
    results: list[dict] = []
    bar = tqdm(total=len(todo), desc="features", unit="clip", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        _worker_init()
        for row in todo:
            results.append(_safe_extract(str(data_dir), row))
            bar.update()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # mediapipe and PyAV are not fork-safe once initialised
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = [pool.submit(_safe_extract, str(data_dir), row) for row in todo]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update()
    bar.close()

    errors = {r["clip_id"]: r["error"] for r in results if "error" in r}
    done = [r for r in results if "error" not in r]
    # Totals describe the whole cache (this run and earlier ones), read from each clip's meta.
    metas = [m for r in rows if (m := _cached_meta(clip_path(data_dir, r["clip_id"]))) is not None]
    manifest = {
        "cache_version": CACHE_VERSION,
        "clips": len(rows),
        "cached": len(metas),
        "extracted": len(done),
        "skipped_up_to_date": len(rows) - len(todo),
        "failed": len(errors),
        "errors": errors,
        "windows": int(sum(m.get("windows", 0) for m in metas)),
        "from_video_with_tracker": sum(m["visual_source"] == "video" for m in metas),
        # MP4s the tracker ran on in this run because no stamp matched (a hospital's own video, an edited
        # file, another face model or tracking version); the rest reused the render's stamped `.npz`.
        "tracked_this_run": sum(bool(r.get("tracked_now")) for r in done),
        "tracking_failed": sorted(
            m["clip_id"] for m in metas if m["visual_source"] == "video" and m.get("face_frames", 0) == 0
        ),
        "tracking_partial": sorted(
            m["clip_id"]
            for m in metas
            if m["visual_source"] == "video" and 0 < m.get("face_frames", 0) < PARTIAL_TRACKING * m["frames"]
        ),
        "tracked_on": machine.count(_tracked_on(m) for m in metas if m["visual_source"] == "video"),
        "from_npz_track": sum(m["visual_source"] == "npz" for m in metas),
        "without_visual": sum(m["visual_source"] == "none" for m in metas),
        "usable_frame_share": (
            sum(m.get("usable_frames", 0) for m in metas) / max(1, sum(m.get("frames", 0) for m in metas))
        ),
    }
    cache_dir(data_dir).mkdir(parents=True, exist_ok=True)
    replace_text(cache_dir(data_dir) / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_clip(path: str | os.PathLike) -> ClipFeatures:
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        return ClipFeatures(
            clip_id=meta["clip_id"],
            age_group=meta["age_group"],
            wave=npz["wave"] if "wave" in npz.files else None,
            features=npz["features"] if "features" in npz.files else None,
            mask=npz["mask"] if "mask" in npz.files else None,
            visual_source=meta.get("visual_source", "none"),
            track=_track_from(npz),
            tracked_on=_tracked_on(meta),
        )


def _tracked_on(meta: dict) -> str | None:
    """A cached clip's Decoded.tracked_on (a cache made before it was recorded: NOT_RECORDED for a video)."""
    return meta.get("tracked_on", tracked.NOT_RECORDED if meta.get("visual_source") == "video" else None)


def _track_from(npz) -> object | None:
    from avpenet.features.track import FaceTrack

    arrays = {k[len(TRACK_PREFIX) :]: npz[k] for k in npz.files if k.startswith(TRACK_PREFIX)}
    return FaceTrack(**arrays) if arrays else None


def load_cache(data_dir: str | os.PathLike, clip_ids: list[str] | None = None) -> dict[str, ClipFeatures]:
    """ClipFeatures of every clip in DIR/labels.csv (or of clip_ids); raises if the cache is incomplete."""
    ids = clip_ids if clip_ids is not None else [r["clip_id"] for r in read_labels(data_dir)]
    missing = [c for c in ids if not clip_path(data_dir, c).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} clip(s) not in the feature cache (e.g. {missing[0]!r}); "
            f"run `avpenet features --data {data_dir}`"
        )
    return {c: load_clip(clip_path(data_dir, c)) for c in ids}
