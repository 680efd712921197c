"""Where a frame with a capture time goes on its stream's timeline of 1/FPS slots (protocol.FRAME_TIME).

Without a capture time each frame takes the next slot, so after a camera stall shorter than signal_timeout_s
(longer ones are realigned to the audio) the frames stay behind the audio by the stall for the rest of the
stream. With one, each frame goes in its own slot, and the slots a stall skipped become frames without a face.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from avpenet import contract
from preprocess_service.stream.protocol import StreamRejected, frame_time

if TYPE_CHECKING:
    from preprocess_service.stream.state import StreamState


class FrameClock:
    def __init__(self, signal_timeout_s: float) -> None:
        self.max_jump = int(round(signal_timeout_s * contract.FPS))
        self.slots_cut = 0  # slots left out of jumps past the leading modality (see slot)

    def slot(self, header: dict, state: StreamState) -> int | None:
        """The slot of a frame, None without a capture time (the next one then). A slot already filled is
        refused. A jump more than signal_timeout_s past the leading modality is cut to that, and so are the
        frames after it: a stream without audio has nothing to keep level with, and a wrong clock is not
        padded with minutes of frames."""
        t = frame_time(header)
        if t is None:
            return None
        next_slot = state.n_frames
        lead_slot = max(next_slot, int(round(state.audio_s * contract.FPS)) if state.expect_audio else 0)
        slot = int(round(t * contract.FPS)) - self.slots_cut
        if slot < next_slot:
            raise StreamRejected(
                "frame_time_behind",
                f"frame t={t:g} s falls in a slot already filled (frames so far reach "
                f"{(next_slot + self.slots_cut) / contract.FPS:g} s); frames go in capture order, at most "
                f"{contract.FPS} a second; skipped",
            )
        furthest = lead_slot + self.max_jump
        self.slots_cut += max(0, slot - furthest)
        return min(slot, furthest)
