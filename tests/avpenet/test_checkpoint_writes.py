"""A run's model.pt and config.json (`avpenet train`, `avpenet calibrate`) are replaced whole and together: a
disk that fills up while either is written leaves the previous pair, which still loads, never half a
checkpoint nor new weights beside the old config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.full_disk import files, fill_disk_midway

from avpenet.model import AVPENet, load_model, save_model


def _model(seed: int) -> AVPENet:
    torch.manual_seed(seed)
    return AVPENet()


@pytest.mark.parametrize(
    "failing", [("write_text", "write_bytes"), ("write_text",)], ids=["weights", "config after weights"]
)
def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch, failing: tuple[str, ...]
) -> None:
    run = tmp_path / "run"
    save_model(_model(1), run, extra={"interval_scale": 1.0})
    before = files(run)
    fill_disk_midway(monkeypatch, tmp_path, failing)
    with pytest.raises(OSError, match="No space left"):
        save_model(_model(2), run, extra={"interval_scale": 2.0})
    assert files(run) == before  # both files as they were, nothing half-written beside them
    monkeypatch.undo()
    loaded = load_model(run)
    assert loaded.config["interval_scale"] == 1.0
    torch.testing.assert_close(loaded.model.state_dict(), _model(1).state_dict(), rtol=0, atol=0)


def test_a_saved_checkpoint_has_the_bytes_torch_save_gives_it(tmp_path: Path) -> None:
    """Saved through a buffer, the archive inside was named "archive/" instead of "model/": the same weights
    got other bytes, and another checkpoint_sha256 in the export manifests."""
    model = _model(3)
    save_model(model, tmp_path / "run")
    torch.save(model.state_dict(), tmp_path / "model.pt")
    assert (tmp_path / "run" / "model.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no scratch left
