"""avpenet.synth.source_probe: a candidate photo's neutral render, as the tracker reads it, and its verdict.

The astronaut is the known case (docs/DATA.md): smiling as shipped (mouthSmile 0.90), neutral after the
smile reversal its source uses (4.0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from avpenet.synth import source_probe, sources


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(sources.SOURCES["astronaut"].load(), cv2.COLOR_RGB2BGR))
    return path


def test_the_astronaut_is_neutral_only_with_her_smile_reversed(astronaut, capsys) -> None:
    crop = ",".join(str(v) for v in sources.SOURCES["astronaut"].crop)
    unsmile = sources.SOURCES["astronaut"].unsmile
    assert source_probe.main([str(astronaut), "--crop", crop, "--unsmile", f"0,{unsmile:g}"]) == 0
    as_shipped, reversed_ = capsys.readouterr().out.splitlines()
    assert "not neutral: mouthSmile" in as_shipped
    assert reversed_.endswith("; neutral"), reversed_
    assert source_probe.main([str(astronaut), "--crop", crop, "--unsmile", "0"]) == 1  # none passes


def test_a_file_that_is_no_image_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(SystemExit) as exc:
        source_probe.main([str(bad), "--crop", "0,0,10"])
    assert exc.value.code == 2


def test_jesper_pedersen_is_neutral_only_with_his_mouth_closed_and_his_gaze_moved(
    tmp_path: Path, capsys
) -> None:
    from avpenet.synth import photos

    photo = tmp_path / "jesper.jpg"
    photo.write_bytes(photos.read("jesper_pedersen"))
    src = sources.SOURCES["jesper_pedersen"]
    crop = ",".join(str(v) for v in src.crop)
    gaze = ",".join(f"{v:g}" for v in src.gaze)
    assert source_probe.main([str(photo), "--crop", crop]) == 1
    as_shipped = capsys.readouterr().out
    assert "jawOpen 0.1" in as_shipped and "eyeLookInRight" in as_shipped, as_shipped
    assert source_probe.main([str(photo), "--crop", crop, "--close-mouth"]) == 1  # the gaze alone fails it
    assert "jawOpen" not in capsys.readouterr().out.split("not neutral:")[1]
    assert source_probe.main([str(photo), "--crop", crop, "--close-mouth", f"--gaze={gaze}"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; neutral")
