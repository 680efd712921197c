"""`python -m avpenet.synth.anamorphic` stores a set's pictures with non-square pixels and keeps the rest."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from skimage import data as images
from support import testmedia as tm

from avpenet import contract
from avpenet.features import tracker
from avpenet.synth import anamorphic


def _set(root) -> None:
    (root / "video").mkdir(parents=True)
    frames = tm.face_frames(images.astronaut(), 12, size=(160, 120))
    sound = tm.tone(1.2, contract.SAMPLE_RATE)
    (root / "video" / "C1.mp4").write_bytes(tm.video_bytes(frames, contract.FPS, audio=sound))
    (root / "labels.csv").write_text("clip_id,video\nC1,video/C1.mp4\n")


def _packets(path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(**{kind: 0}) if p.size]


def test_pictures_are_stored_with_the_declared_pixels_and_shown_as_before(tmp_path) -> None:
    _set(tmp_path / "src")
    anamorphic.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--ratio", "4:3", "--jobs", "1"])
    before, after = tmp_path / "src" / "video" / "C1.mp4", tmp_path / "dst" / "video" / "C1.mp4"
    with av.open(str(after)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (120, 120)
        assert stream.sample_aspect_ratio == Fraction(4, 3)
    shown, original = (np.stack(list(tracker.iter_video_frames(p))) for p in (after, before))
    assert shown.shape == original.shape
    assert np.abs(shown.astype(np.int16) - original.astype(np.int16)).mean() < 8
    assert _packets(after, "audio") == _packets(before, "audio")  # the sound copied, not re-encoded
    assert (tmp_path / "dst" / "labels.csv").read_text() == (tmp_path / "src" / "labels.csv").read_text()


@pytest.mark.parametrize("ratio", ["9:1", "4:0", "wide"])
def test_a_pixel_shape_no_camera_has_is_refused(tmp_path, capsys, ratio: str) -> None:
    _set(tmp_path / "src")
    with pytest.raises(SystemExit) as stopped:
        anamorphic.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--ratio", ratio])
    assert stopped.value.code == 2
    assert "1:4 to 4:1" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


def test_a_folder_that_is_no_rendered_set_is_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        anamorphic.main([str(tmp_path / "nothing"), str(tmp_path / "dst"), "--ratio", "4:3"])
    assert stopped.value.code == 2
    assert "no labels.csv" in capsys.readouterr().err
