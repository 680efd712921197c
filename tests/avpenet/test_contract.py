"""The contract is internally consistent: derived sizes agree with the signal constants."""

import numpy as np
import pytest

from avpenet import contract as c


def test_signal_constants_agree():
    assert c.WINDOW_SAMPLES == 48_000 and c.HOP_SAMPLES == 16_000
    # centred STFT of a 3 s window has 1 + WINDOW/HOP frames; the model keeps the first MEL_FRAMES
    assert c.WINDOW_SAMPLES // c.HOP_LENGTH + 1 == c.MEL_FRAMES + 1
    assert c.FRAMES_PER_WINDOW == 30 and c.FRAMES_PER_HOP == 10
    # three stride-2 stages (kernel 3, padding 1) over the mel frames
    t = c.MEL_FRAMES
    for _ in range(3):
        t = (t - 1) // 2 + 1
    assert t == c.AUDIO_TOKENS


def test_visual_layout_covers_feature_vector():
    widths = [c.feature_slice(name) for name, _ in c.VISUAL_FEATURE_SEGMENTS]
    assert widths[0].start == 0 and widths[-1].stop == c.VISUAL_FEATURE_DIM
    assert all(a.stop == b.start for a, b in zip(widths, widths[1:], strict=False))
    assert len(set(c.LANDMARK_SUBSET)) == len(c.LANDMARK_SUBSET)
    assert all(0 <= i < c.N_LANDMARKS for i in c.LANDMARK_SUBSET)
    assert len(c.BLENDSHAPE_NAMES) == 52 == len(set(c.BLENDSHAPE_NAMES))
    with pytest.raises(KeyError):
        c.feature_slice("nope")


@pytest.mark.parametrize(
    ("score", "level"),
    [(0, "low"), (3.0, "low"), (3.01, "moderate"), (6, "moderate"), (6.5, "high"), (10, "high")],
)
def test_levels_follow_paper_thresholds(score, level):
    assert c.level_of(score) == level


def test_age_index_rejects_unknown_names():
    assert [c.age_index(a) for a in c.AGE_GROUPS] == [0, 1, 2]
    with pytest.raises(ValueError, match="age_group must be one of"):
        c.age_index("toddler")


def test_ensemble_io_is_the_parts_io():
    internal = {t.name for m in c.PARTS for t in m.outputs} & {t.name for m in c.PARTS for t in m.inputs}
    assert internal == {"log_mel", "audio_tokens", "visual_tokens"}
    assert c.ENSEMBLE.outputs == c.FUSION.outputs
    public_in = {t.name for m in c.PARTS for t in m.inputs} - internal
    assert public_in == {t.name for t in c.ENSEMBLE.inputs}
    assert c.AGE_GROUP.numpy_dtype is np.int64
