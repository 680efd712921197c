"""A split-conformal 90% interval needs at least 9 calibration clips: the rank ceil((n+1)·0.9) is past the
last clip below that, and the scale falls back to the largest error, guaranteed to cover n/(n+1) of new
clips. `avpenet train` and `avpenet calibrate` said nothing, while the docs promise at least 90%."""

from __future__ import annotations

import math

import pytest

from avpenet import contract
from avpenet.train import conformal_shortfall


@pytest.mark.parametrize(("n", "share"), [(1, "50%"), (5, "83%"), (8, "89%")])
def test_fewer_than_nine_clips_say_what_they_guarantee(n, share):
    note = conformal_shortfall(n)
    assert note is not None and f"on {n} clip(s), fewer than the 9 it needs" in note
    assert f"guaranteed to cover {share} of new clips" in note and "avpenet calibrate --add" in note


@pytest.mark.parametrize("n", [9, 10, 30, 627])
def test_from_nine_clips_the_rank_exists_and_nothing_is_said(n):
    assert math.ceil((n + 1) * contract.INTERVAL_COVERAGE) <= n
    assert conformal_shortfall(n) is None
