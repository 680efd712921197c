"""A copy of the committed model repository and a fusion model that scores visibly higher than the one it
serves: exporting the model into the copy publishes fusion N+1, and a test can tell which version answered."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from avpenet import contract

if TYPE_CHECKING:
    from avpenet.model import AVPENet

SCORE_SHIFT = 1.5  # added to the fusion score head's bias: far beyond any numeric difference


@dataclass
class FusionBump:
    repo: Path  # the copy
    old_version: int  # the fusion version it serves
    old_model: AVPENet  # that version's PyTorch model
    new_model: AVPENet  # the same with SCORE_SHIFT on its score head


def fusion_bump(tmp_path: Path) -> FusionBump:
    import torch

    from ensemble import DEFAULT_REPOSITORY, export, versions

    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_REPOSITORY, repo)
    fusion = repo / contract.FUSION.name
    old_version = versions.latest(fusion)
    old_model = export.model_from_source(versions.read_manifest(fusion, old_version)["source"])
    new_model = copy.deepcopy(old_model)
    with torch.no_grad():
        new_model.fusion.score_head.bias.add_(SCORE_SHIFT)
    return FusionBump(repo, old_version, old_model, new_model)
