"""Versioning: identical weights add nothing, one changed part gets N+1 alone, manifests, pruning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from avpenet import contract
from avpenet.model import AVPENet
from ensemble import export, versions


@pytest.fixture(scope="module")
def model() -> AVPENet:
    torch.manual_seed(3)
    return AVPENet().eval()


def test_reexport_is_a_noop_and_a_changed_part_alone_gets_a_new_version(
    model: AVPENet, tmp_path: Path
) -> None:
    warnings.filterwarnings("ignore")
    source = {"kind": "random-init", "seed": 3}
    first = export.export_repository(model, tmp_path, source, keep=5)
    assert {name: row["version"] for name, row in first.items()} == {m.name: 1 for m in contract.MODELS}

    with torch.no_grad():
        model.fusion.score_head.bias.add_(0.5)  # "retrained" fusion only
    changed = export.export_repository(model, tmp_path, {"kind": "checkpoint", "run_dir": "runs/x"}, keep=5)
    assert changed[contract.FUSION.name] == {"version": 2, "created": True, "pruned": []}
    for part in (contract.AUDIO_FRONTEND, contract.AUDIO_ENCODER, contract.VISUAL_ENCODER):  # same bytes
        assert changed[part.name]["version"] == 1 and not changed[part.name]["created"]
        assert versions.versions(tmp_path / part.name) == [1]

    manifest = versions.read_manifest(tmp_path / contract.FUSION.name, 2)
    assert manifest["previous_version"] == 1 and manifest["source"]["run_dir"] == "runs/x"
    assert manifest["files"]["model.onnx"] == versions.sha256_file(tmp_path / "fusion" / "2" / "model.onnx")
    assert (
        manifest["files"]["model.onnx"]
        != versions.read_manifest(tmp_path / "fusion", 1)["files"]["model.onnx"]
    )
    assert manifest["parity_max_abs_diff_torch_vs_onnx"] <= 1e-4
    ensemble = json.loads((tmp_path / contract.ENSEMBLE.name / "1" / versions.MANIFEST).read_text())
    assert ensemble["steps_served"][contract.FUSION.name] == 2


def test_add_version_and_prune(tmp_path: Path) -> None:
    folder = tmp_path / "part"
    assert versions.add_version(folder, {"model.onnx": b"a"}, {}) == (1, True)
    assert versions.add_version(folder, {"model.onnx": b"a"}, {}) == (1, False)
    assert versions.add_version(folder, {"model.onnx": b"b"}, {}) == (2, True)
    assert versions.add_version(folder, {"model.onnx": b"c"}, {}) == (3, True)
    assert not list(folder.glob(".staging-*"))
    assert versions.prune(folder, keep=2) == [1]
    assert versions.versions(folder) == [2, 3]
    with pytest.raises(ValueError):
        versions.prune(folder, keep=0)
    assert versions.add_version(folder, {"model.onnx": b"d"}, {}) == (4, True)  # numbering never reuses


def test_an_export_whose_later_part_fails_publishes_no_part(tmp_path, monkeypatch):
    """A fusion failing its parity check left the encoders at N+1 beside the old fusion: a pairing never
    validated, served at the next load."""
    import shutil
    from types import SimpleNamespace

    repo = tmp_path / "model_repository"
    shutil.copytree(export.DEFAULT_REPOSITORY, repo)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))

    def exported(_part, spec):
        if spec is contract.PARTS[-1]:
            raise RuntimeError(f"{spec.name}: ONNX and torch differ by 3e-2")
        return b"a retrained graph", 0.0

    monkeypatch.setattr(export, "export_part", exported)
    monkeypatch.setattr(export, "fp32_dft_frontend", lambda: (b"its fp32-DFT graph", 0.0))
    with pytest.raises(RuntimeError, match="differ"):
        export.export_repository(SimpleNamespace(part=lambda name: None), repo, {"kind": "test"})
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
