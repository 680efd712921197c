"""A video stream's frames padded before its first decoded image (the first frame refused, dropped by the flow
control) have no size (0x0). A window's faces are read at the size of its frames that
have one (FaceTrack.concat). Before, the window's track took its first frame's size: window 0 read every face
squeezed to a square (examples/neonate-cry-high.mp4 in 640x384 frames: score 9.056 against 9.271)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.stream_feed import start

from avpenet import contract
from avpenet.features import tracker
from avpenet.features.track import FaceTrack
from avpenet.features.visual import frame_features
from preprocess_service.stream.protocol import StreamRejected
from preprocess_service.stream.state import StreamState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def portrait() -> list[np.ndarray]:
    """40 frames of the example, padded to portrait (384 wide, 640 high)."""
    frames = list(tracker.iter_video_frames((EXAMPLES / "neonate-cry-high.mp4").read_bytes()))[:40]
    return [np.pad(f, ((128, 128), (0, 0), (0, 0))) for f in frames]


@pytest.mark.parametrize("first", ["refused", "dropped"])
def test_window_0_reads_its_faces_at_the_frames_size_after_a_first_frame_without_one(portrait, first):
    h, w = portrait[0].shape[:2]
    state = StreamState(start(mode="video", audio=False), 10**7)
    for k, rgb in enumerate(portrait):
        header = {"format": "rgb", "width": w, "height": h}
        if k == 0 and first == "refused":
            with pytest.raises(StreamRejected):
                state.add_frame(header, memoryview(b"\0" * 10))
            continue
        if k == 0 and first == "dropped":  # by the flow control, unread
            state.add_dropped_frame({"t": 0.0})
            continue
        state.add_frame({**header, "t": k / contract.FPS}, memoryview(rgb.tobytes()))
    assert state.n_frames == 40 and state.frames[0].image_size.tolist() == [0, 0]
    whole = FaceTrack.concat(state.frames)
    whole.image_size = np.array([w, h], np.int32)  # every frame read at its size
    feats, mask = frame_features(whole)
    assert mask[1:30].sum() > 20
    (window, *_) = state.ready() + state.finish()
    assert window.index == 0
    got = window.inputs[contract.VISUAL_FEATURES.name][0]
    np.testing.assert_allclose(got, feats[:30], atol=1e-6)  # before: off by up to 1.1
    np.testing.assert_array_equal(window.inputs[contract.FRAME_MASK.name][0], mask[:30])


def test_concat_takes_the_first_size_known():
    face = FaceTrack.empty(2, (384, 640))
    assert FaceTrack.concat([FaceTrack.empty(1), face]).image_size.tolist() == [384, 640]
    assert FaceTrack.concat([FaceTrack.empty(1, (8, 6)), face]).image_size.tolist() == [8, 6]  # the first's
    assert FaceTrack.concat([FaceTrack.empty(1), FaceTrack.empty(1)]).image_size.tolist() == [0, 0]
