"""The stamp that makes a rendered clip's ``.npz`` count as the tracking of its MP4, so it is tracked once.

``avpenet synth`` tracks every render with the real FaceLandmarker to write the clip's ``.npz``, then writes
``<clip>.tracked.json`` beside it: sha256 of the MP4 and of the ``.npz``, the face model's digest and
TRACKING_VERSION. ``cache.decode_row`` reuses the ``.npz`` as the video's face only when every field matches
what it would compute now — same MP4 bytes, same file, same model, same tracking code — and runs the tracker
otherwise (a hospital's own MP4 and landmarks, an edited file, another model).
The stamp also names the machine that rendered and tracked the clip (``avpenet/machine.py``): reported by
``avpenet features`` and ``avpenet evaluate``, never compared, since a track made on another CPU is still
this MP4's tracking (it differs from one made here only in the last bits of its floats).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

TRACKED_SUFFIX = ".tracked.json"
MACHINE_KEY = "machine"  # who rendered and tracked the clip: reported, not part of the match
NOT_RECORDED = "not recorded (made before machines were)"
TRACKING_VERSION = 2  # bump when tracker.py samples or reports frames differently: every stamp goes stale
# (2: a clip's first frame is stamped at tracker.FIRST_TIMESTAMP_MS instead of 0)
# (not bumped for non-square pixels, features/pixel_aspect.py: only `avpenet synth` stamps, and its
# renders have square pixels, tracked as before)


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _tracking_stamp(video: bytes, npz_blob: bytes) -> dict:
    from avpenet.features import tracker

    model = os.environ.get(tracker.MODEL_SHA256_ENV) or tracker.MODEL_SHA256  # the digest model_bytes checks
    return {
        "video_sha256": _sha256(video), "npz_sha256": _sha256(npz_blob),
        "face_model_sha256": model, "tracking_version": TRACKING_VERSION,
    }  # fmt: skip


def stamp_path(npz_path: str | os.PathLike) -> Path:
    return Path(npz_path).with_suffix(TRACKED_SUFFIX)


def write_tracking_stamp(video: bytes, npz_path: str | os.PathLike) -> None:
    """Record that the .npz at npz_path is track_video(video) (called by the writer right after saving it)."""
    from avpenet import machine

    stamp = _tracking_stamp(video, Path(npz_path).read_bytes())
    stamp[MACHINE_KEY] = machine.describe(machine.TRACKING_PACKAGES)
    stamp_path(npz_path).write_text(json.dumps(stamp, indent=1) + "\n")


def stamped_track(video: bytes, npz_path: Path):
    """(the .npz's FaceTrack, the machine that made it) when its stamp says it is this MP4's tracking by this
    tracker; else None."""
    from avpenet.features.track import FaceTrack

    try:
        stamp = json.loads(stamp_path(npz_path).read_text())
        blob = npz_path.read_bytes()
    except (OSError, ValueError):
        return None
    made_on = stamp.pop(MACHINE_KEY, NOT_RECORDED) if isinstance(stamp, dict) else None
    if stamp != _tracking_stamp(video, blob):
        return None
    return FaceTrack.load_npz(blob), made_on
