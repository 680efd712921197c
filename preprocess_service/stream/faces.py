"""A stream window's face features from the frame buffer, with the neighbours the feature code reads.

`features.visual` decides a frame's mask partly from the frames around it (a still run: the device repeating
its last landmarks), up to CONTEXT_FRAMES on either side. So a window's frames are read with that many frames
before and after it, and a window is cut only once the frames after it can no longer change its mask
(`settled`): the window gets the rows the whole recording's track gives (a clip's, training's). The wait
is one frame or none while the face moves; a still run makes it wait until the run is decided, at most
CONTEXT_FRAMES frames (< 1 s)."""

from __future__ import annotations

import numpy as np

from avpenet.features.track import FaceTrack
from avpenet.features.visual import CONTEXT_FRAMES, FROZEN_MIN_FRAMES, frame_features, unsettled

HISTORY = CONTEXT_FRAMES  # frames the buffer keeps before the next window's first


def window_features(frames: list[FaceTrack], first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """frame_features rows of frames[first:first + count] (1-frame tracks), read with the frames within
    CONTEXT_FRAMES of them that `frames` holds, at the size of the frames that have one (FaceTrack.concat:
    a frame padded before the first decoded image is 0x0; before, a window starting with one read every face
    in it squeezed to a square)."""
    lo, hi = max(first - CONTEXT_FRAMES, 0), min(first + count + CONTEXT_FRAMES, len(frames))
    feats, mask = frame_features(FaceTrack.concat(frames[lo:hi]))
    return feats[first - lo : first - lo + count], mask[first - lo : first - lo + count]


def settled(frames: list[FaceTrack], n_frames: int, end: int) -> bool:
    """Whether the frames before frame number `end` keep their mask whatever frames follow. `frames`: the
    buffer, its last frame number n_frames - 1, holding the whole stream or its last FROZEN_MIN_FRAMES."""
    return n_frames - unsettled(FaceTrack.concat(frames[-FROZEN_MIN_FRAMES:])) >= end
