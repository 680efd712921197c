"""A one-clip AVPE-Synth set, rendered to MP4 and tracked by the generator's own code path."""

from __future__ import annotations

from pathlib import Path

from avpenet.features import cache
from avpenet.synth import dataset


def render_one_clip(root: Path) -> dict[str, str]:
    """Write a set of one rendered clip (seed 7) under `root` and return its labels.csv row."""
    for sub in ("audio", "visual", "video"):
        (root / sub).mkdir()
    plans = [p for p in dataset.plan(7, 2, 6, None) if p.render and not p.visual_missing][:1]
    assert plans, "the plan renders every clip with a face by default"
    plans[0].truth = dataset.make_clip(plans[0], str(root))
    dataset.write_labels(root / "labels.csv", plans)
    return cache.read_labels(root)[0]
