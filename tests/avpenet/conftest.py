"""Fixtures shared by the model tests (training, evaluation).

One tiny real AVPE-Synth set and one tiny training run per test session: generating and training cost
seconds on 2 cores, so the training and evaluation tests share them.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory) -> Path:
    """A real AVPE-Synth set small enough for a unit test (8 subjects, 40 clips)."""
    from avpenet.synth import dataset

    out = tmp_path_factory.mktemp("tiny") / "synth"
    dataset.generate(out, seed=5, n_subjects=8, n_clips=40, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_set, tmp_path_factory) -> tuple[Path, dict]:
    """`avpenet train` for 4 epochs on tiny_set: (run directory, the config it wrote)."""
    from avpenet import train

    out = tmp_path_factory.mktemp("run")
    args = ["--data", str(tiny_set), "--out", str(out), "--epochs", "4", "--batch-size", "8"]
    config = train.main([*args, "--quiet", "--patience", "9"])
    return out, config
