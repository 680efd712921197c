"""frame_features turns only the landmarks its AU geometry measures to the frontal template.

Turning all 478 points of every frame cost most of a long clip's visual features (600 frames for 60 s);
the geometry reads ~25 of them. These tests keep that exact: the geometry reads no other point, and each
turned point equals the full transform's bit for bit.
"""

from __future__ import annotations

import numpy as np

from avpenet import contract
from avpenet.features import faceframe, visual


def test_geometry_reads_only_the_turned_points():
    points = np.random.default_rng(0).normal(size=(5, contract.N_LANDMARKS, 3))
    poisoned = points.copy()
    others = np.ones(contract.N_LANDMARKS, bool)
    others[visual._GEOMETRY] = False
    poisoned[:, others] = np.nan  # a point read outside _GEOMETRY would turn a measure into NaN
    clean, dirty = visual._geometry(points), visual._geometry(poisoned)
    assert all(np.array_equal(clean[k], dirty[k]) for k in clean)


def test_turned_points_equal_the_full_transform():
    rng = np.random.default_rng(1)
    points = rng.uniform(100, 500, (40, contract.N_LANDMARKS, 3)) + rng.normal(0, 3, (40, 1, 3))
    full = faceframe.align3d(points)
    part = faceframe.align3d_at(points[:, faceframe.RIGID_INDEX], points[:, visual._GEOMETRY])
    assert np.array_equal(part, full[:, visual._GEOMETRY])
