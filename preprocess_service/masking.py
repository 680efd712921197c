"""Which modality an answer did not use, and why (the response's ``masked`` field).

A clinician reading a score needs to know what it rests on: a score from the voice alone because no face was
found means something else than one from voice and face. Reasons, per modality:
- audio: not sent; or silent — the whole track below ``contract.AUDIO_SILENCE_DBFS`` RMS while a usable face
  is there. Such a track carries no vocalisation, and the model never saw digital silence as audio in
  training (its clips always carry room noise), so the face decides alone (the audio is masked exactly as
  training's modality dropout masks it). Silence with no face is still scored from the audio: silence is
  information, and a request is never refused for it.
- visual: not sent; no face found in any frame; or a face found but its landmarks unusable in every frame
  (collapsed, outside the frame or frozen: ``features.visual`` decides).
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
SILENT = (
    f"the audio is silent (below {contract.AUDIO_SILENCE_DBFS:g} dBFS RMS throughout); scored from the face"
)


def is_silent(wave: np.ndarray) -> bool:
    """The whole track below the silence threshold (an empty track counts as silent)."""
    if wave.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-12)) < contract.AUDIO_SILENCE_DBFS


def apply(inputs: dict[str, np.ndarray], wave, track) -> tuple[list[str], dict[str, str]]:
    """(modalities used, {modality: why masked}); masks silent audio in `inputs` (in place) when a face
    carries the answer."""
    face = bool(np.any(inputs[contract.FRAME_MASK.name]))
    masked: dict[str, str] = {}
    if wave is None:
        masked["audio"] = NOT_SENT_AUDIO
    elif face and is_silent(wave):
        for sound in (contract.AUDIO.name, contract.WAVEFORM.name):  # served rows or the model's windows
            if sound in inputs:
                inputs[sound] = np.zeros_like(inputs[sound])
        inputs[contract.AUDIO_PRESENT.name] = np.zeros_like(inputs[contract.AUDIO_PRESENT.name])
        masked["audio"] = SILENT
    if track is None:
        masked["visual"] = NOT_SENT_VISUAL
    elif not face:
        masked["visual"] = NO_FACE if not np.any(track.face_present) else UNUSABLE_FACE
    used = [m for m in ("audio", "visual") if m not in masked]
    return used, masked
