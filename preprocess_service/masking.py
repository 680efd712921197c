"""Which modality an answer did not use, and why (the response's ``masked`` field).

A clinician reading a score needs to know what it rests on: a score from the voice alone because no face was
found means something else than one from voice and face. The masking itself is the shared feature code's,
per window, so a clip scored whole, the same media streamed and training all mask the same windows; this
module only names it. ``masked`` is per clip: it names a modality only when NO window used it (each window's
own ``modality_weights`` show which one it rests on). Reasons, per modality:
- audio: not sent; too short — at most ``contract.WINDOW_TAIL_TOLERANCE_S`` of it, which no window counts as
  sound (``features.windows.sound_windows``), so the face decides alone; or silent — every window holding
  sound had it masked by ``features.windows`` (its own samples below ``contract.AUDIO_NO_SIGNAL_DBFS`` RMS,
  a muted or dead input, while it has a usable face frame: such audio holds no recording and the model never
  heard one in training, so the face decides alone). A clip silent only in some windows, or silent in a
  window without a face, still reports its audio as used: those windows are scored from the audio (silence
  is information, and a request is never refused for it); a quiet room above the threshold is audio.
- visual: not sent; no face found in any frame; or a face found but its landmarks unusable in every frame
  (collapsed, outside the frame or still: ``features.visual`` decides, frame by frame).
"""

from __future__ import annotations

import numpy as np

from avpenet import contract

NOT_SENT_AUDIO = "no audio in the upload"
NOT_SENT_VISUAL = "no video or landmarks in the upload"
NO_FACE = "no face found in any frame"
UNUSABLE_FACE = (
    "a face was found but its landmarks were unusable in every frame (collapsed, off-frame or frozen)"
)
TOO_SHORT = (
    f"the audio lasts at most {contract.WINDOW_TAIL_TOLERANCE_S:g} s, too short for any window to count it "
    "as sound; scored from the face"
)
SILENT = (
    f"the audio is silent (below {contract.AUDIO_NO_SIGNAL_DBFS:g} dBFS RMS, no recording, in every window, "
    "each with a face); scored from the face"
)


def apply(inputs: dict[str, np.ndarray], wave, track) -> tuple[list[str], dict[str, str]]:
    """(modalities used, {modality: why masked}) of a clip's model inputs (`windows.model_inputs`)."""
    from avpenet.features import windows

    present = inputs[contract.AUDIO_PRESENT.name].reshape(-1) > 0.5
    masked: dict[str, str] = {}
    if wave is None:
        masked["audio"] = NOT_SENT_AUDIO
    elif not present.any() and windows.sound_windows(int(np.asarray(wave).size), len(present)).any():
        masked["audio"] = SILENT  # every window with sound had it masked: only the silence rule does that
    elif not present.any():
        masked["audio"] = TOO_SHORT  # no window holds sound at all (extract refuses it without a face)
    if track is None:
        masked["visual"] = NOT_SENT_VISUAL
    elif not np.any(inputs[contract.FRAME_MASK.name]):
        masked["visual"] = NO_FACE if not np.any(track.face_present) else UNUSABLE_FACE
    used = [m for m in ("audio", "visual") if m not in masked]
    return used, masked
