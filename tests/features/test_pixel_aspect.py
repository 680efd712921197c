"""Video with non-square pixels (HDV, DV, SD capture, anamorphic lenses) is tracked as a player shows it:
read as coded, the face the landmarker sees is squeezed or widened and its features move with it."""

from __future__ import annotations

import functools
from fractions import Fraction

import cv2
import numpy as np
import pytest
from skimage import data as images
from support import testmedia as tm

from avpenet import contract
from avpenet.errors import UndecodableMedia
from avpenet.features import pixel_aspect, tracker, visual

SIZE = 192  # the square frames as shown
LANDMARKS = contract.feature_slice("landmarks_xy")


@functools.cache
def _shown() -> tuple[np.ndarray, ...]:
    face = images.astronaut()[0:300, 90:390]
    return tuple(tm.face_frames(face, 20, size=(SIZE, SIZE)))


def _coded(ratio: Fraction) -> list[np.ndarray]:
    """The frames as a camera with pixels `ratio` as wide as tall stores them."""
    width = round(SIZE / ratio)
    return [cv2.resize(f, (width, SIZE), interpolation=cv2.INTER_AREA) for f in _shown()]


def _features(video: bytes) -> tuple[np.ndarray, np.ndarray]:
    return visual.frame_features(tracker.track_video(video))


@pytest.mark.parametrize(
    ("coded", "ratio", "shown", "max_pixels"),
    [
        ((1920, 1080), Fraction(1), (1920, 1080), 1920 * 1080),
        ((1440, 1080), Fraction(4, 3), (1920, 1080), 1920 * 1080),  # HDV
        ((720, 480), Fraction(8, 9), (640, 480), 720 * 480),  # NTSC DV, 4:3
        ((720, 576), Fraction(64, 45), (1024, 576), 1920 * 1080),  # PAL DV, 16:9
        ((1920, 1080), Fraction(4, 3), (1920, 810), 1920 * 1080),  # wider would pass the limit: shorter
    ],
)
def test_frames_take_the_shape_a_player_shows(coded, ratio, shown, max_pixels) -> None:
    assert pixel_aspect.display_size(*coded, ratio, max_pixels) == shown


@pytest.mark.parametrize("ratio", [Fraction(4, 3), Fraction(8, 9)])
def test_an_anamorphic_recording_decodes_to_the_frames_it_shows(ratio: Fraction) -> None:
    shown = list(tracker.iter_video_frames(tm.video_bytes(_coded(ratio), contract.FPS, sample_aspect=ratio)))
    assert [f.shape for f in shown] == [(SIZE, SIZE, 3)] * len(_shown())
    difference = np.abs(np.stack(shown).astype(np.int16) - np.stack(_shown()).astype(np.int16))
    assert difference.mean() < 8  # what two resamplings and H.264 leave of the same pictures


@pytest.mark.parametrize("ratio", [Fraction(4, 3), Fraction(8, 9)])
def test_the_face_is_tracked_as_shown_not_as_coded(ratio: Fraction) -> None:
    """The landmarks of an anamorphic recording match those of the same pictures with square pixels; the
    same coded frames declared square (how they were read before) are several times further off."""
    square, square_mask = _features(tm.video_bytes(list(_shown()), contract.FPS))
    as_shown, shown_mask = _features(tm.video_bytes(_coded(ratio), contract.FPS, sample_aspect=ratio))
    as_coded, coded_mask = _features(tm.video_bytes(_coded(ratio), contract.FPS))
    both = square_mask.astype(bool) & shown_mask.astype(bool) & coded_mask.astype(bool)
    assert both.sum() >= len(_shown()) // 2
    off_shown = np.abs(as_shown[both, LANDMARKS] - square[both, LANDMARKS]).mean()
    off_coded = np.abs(as_coded[both, LANDMARKS] - square[both, LANDMARKS]).mean()
    assert off_shown < 0.4 * off_coded, (off_shown, off_coded)


@pytest.mark.parametrize("ratio", [Fraction(5, 1), Fraction(1, 5)])
def test_an_impossible_pixel_shape_is_refused_with_the_accepted_range(ratio: Fraction) -> None:
    video = tm.video_bytes(list(_shown())[:3], contract.FPS, sample_aspect=ratio)
    with pytest.raises(
        UndecodableMedia, match=rf"pixel shape of {ratio.numerator}:{ratio.denominator} .*1:4 to 4:1"
    ):
        list(tracker.iter_video_frames(video))


def test_the_pixel_shape_is_applied_before_the_display_rotation() -> None:
    """A phone's upright recording with non-square pixels: the shape belongs to the coded frame, so the
    frame is stretched first and turned after (turning first would stretch the shown frame's height)."""
    coded = [np.zeros((64, 72, 3), np.uint8) for _ in range(3)]  # 72 x 64 pixels of 4:3: 96 x 64 shown
    for frame in coded:
        frame[:8, :12] = 255  # a mark in the coded top-left corner
    video = tm.turned_clockwise(tm.video_bytes(coded, contract.FPS, sample_aspect=Fraction(4, 3)))
    shown = next(tracker.iter_video_frames(video))
    assert shown.shape == (96, 64, 3)  # upright: as wide as the coded frame is tall
    rows, cols = np.nonzero(shown[:, :, 0] > 128)
    assert rows.min() == 0 and cols.max() == 63  # the mark turned to the top-right corner ...
    assert 14 <= rows.max() + 1 <= 18 and 6 <= 64 - cols.min() <= 10  # ... 12 px widened to 16, 8 kept
