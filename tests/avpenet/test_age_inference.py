"""A request without an age group is scored with the age its clip shows (avpenet/age_inference.py): the age
head reads it from the encoders' tokens, requests that name their age are answered exactly as before, and
runs saved before the head existed still serve such requests with the third embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avpenet import contract as C
from avpenet.age_inference import MIN_SUBJECTS_PER_GROUP, fit_age_head, inferred_age_accuracy
from avpenet.aggregate import adult_probability
from avpenet.model import AVPENet, AVPENetConfig, example_inputs, load_model, save_model
from avpenet.predict import INPUT_NAMES, predict_windows, with_age

SHIFT = 1.5  # the face features of the two groups differ this much: easy to tell apart, as real cries are


def _model(seed: int) -> AVPENet:
    torch.manual_seed(seed)
    return AVPENet(AVPENetConfig(audio_width=32, n_fusion_layers=1)).eval()


def _clip(age: str, windows: int, seed: int) -> dict[str, np.ndarray]:
    """One clip's windows whose face features and sound both carry its age group (a high cry, a low moan),
    sent with that age group."""
    arrays = example_inputs(C.MODEL_INPUTS, windows, seed)
    x = {n: t.numpy().copy() for n, t in zip(INPUT_NAMES, arrays, strict=True)}
    x[C.VISUAL_FEATURES.name] += SHIFT if age == "adult" else -SHIFT
    t = np.arange(x[C.WAVEFORM.name].shape[-1]) / C.SAMPLE_RATE
    x[C.WAVEFORM.name] += 0.3 * np.sin(2 * np.pi * (120.0 if age == "adult" else 500.0) * t).astype(
        np.float32
    )
    x[C.AGE_GROUP.name][:] = C.age_index(age)
    return x


def _clips(seed: int) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    ages = [
        "neonate",
        "adult",
    ] * 6  # one clip per subject: 6 of each group (age_inference.MIN_SUBJECTS_PER_GROUP)
    return [_clip(a, 4, seed + i) for i, a in enumerate(ages)], ages


def _each_own(clips: list) -> list[str]:
    """A subject per clip."""
    return [f"S{i:04d}" for i in range(len(clips))]


def _fit(model: AVPENet, clips: list[dict[str, np.ndarray]]) -> dict:
    return fit_age_head(model, clips, _each_own(clips))


def test_a_request_without_an_age_is_scored_as_its_clip_shows_and_the_others_as_before():
    model = _model(0)
    train, _ = _clips(100)
    test, ages = _clips(200)
    named = [predict_windows(model, x) for x in test]
    unknown_before = predict_windows(model, with_age(test[0], C.UNKNOWN_AGE))

    record = _fit(model, train)

    assert record["fitted"] and record["windows"] == 48 and float(model.fusion.infers_age) == 1.0
    assert record["in_sample_window_accuracy"] == {"as_sent": 1.0, "audio_only": 1.0, "face_only": 1.0}
    assert record["subjects"] == {"neonate": 6, "adult": 6}
    inferred = inferred_age_accuracy(model, [with_age(x, C.UNKNOWN_AGE) for x in test], ages)
    for path in ("as_sent", "audio_only", "face_only"):  # one modality is what many requests carry
        assert inferred[path] == {
            "window_accuracy": 1.0, "clip_accuracy": 1.0, "clips_read": 12,
            # separable clips read surely: every mistyped age group is questioned, none named right
            "questioned_named_right": 0, "questioned_named_wrong": 12,
        }, path  # fmt: skip
    for x, age, before in zip(test, ages, named, strict=True):
        after = predict_windows(model, x)
        read = after.pop(C.ADULT_PROBABILITY.name)  # what the head reads, reported whatever was sent
        assert np.all(before.pop(C.ADULT_PROBABILITY.name) == C.NOT_READ)
        assert np.all((read > 0.5) == (age == "adult")) and np.all((read >= 0) & (read <= 1))
        for name, value in before.items():  # a request naming its age: every score output bit for bit
            np.testing.assert_array_equal(after[name], value)
        guessed = predict_windows(model, with_age(x, C.UNKNOWN_AGE))  # scored with (nearly) its own age
        np.testing.assert_allclose(guessed[C.SCORE.name], before[C.SCORE.name], atol=0.05)
    unknown_after = predict_windows(model, with_age(test[0], C.UNKNOWN_AGE))
    assert not np.allclose(unknown_after[C.SCORE.name], unknown_before[C.SCORE.name], atol=0.05)


def test_a_clip_is_read_as_the_gateway_reports_it_from_the_windows_with_a_modality():
    """The gateway's age_read is the mean over the windows with a modality, and none for a clip without one;
    the evaluation's clip accuracy counts the same readings."""
    model = _model(2)
    _fit(model, _clips(300)[0])
    test, ages = _clips(500)
    test = [with_age(x, C.UNKNOWN_AGE) for x in test]
    test[0][C.FRAME_MASK.name][:] = 0  # no face anywhere: on the face-only path nothing is read
    test[1][C.FRAME_MASK.name][:2] = 0  # two faceless windows: on the face-only path only the rest count
    inferred = inferred_age_accuracy(model, test, ages)
    assert inferred["as_sent"]["clips_read"] == 12 and inferred["face_only"]["clips_read"] == 11
    assert inferred["audio_only"]["clips_read"] == 12


def test_clips_of_one_age_group_leave_the_age_inference_as_it_was():
    model = _model(1)
    neonates = [_clip("neonate", 4, i) for i in range(3)]
    before = predict_windows(model, with_age(neonates[0], C.UNKNOWN_AGE))
    record = _fit(model, neonates)
    assert not record["fitted"] and "one age group" in record["why"]
    assert float(model.fusion.infers_age) == 0.0
    after = predict_windows(model, with_age(neonates[0], C.UNKNOWN_AGE))
    np.testing.assert_array_equal(after[C.SCORE.name], before[C.SCORE.name])
    _fit(model, _clips(400)[0])  # a head fitted before (the reference's), then a one-group fine-tune
    fitted = model.fusion.age_head.weight.clone()
    assert not _fit(model, neonates)["fitted"]
    assert float(model.fusion.infers_age) == 1.0 and torch.equal(model.fusion.age_head.weight, fitted)
    with pytest.raises(ValueError, match="own age group"):
        _fit(model, [*neonates, with_age(_clip("adult", 4, 9), C.UNKNOWN_AGE), _clip("adult", 4, 8)])


@pytest.mark.parametrize("encoders_changed", [False, True])
def test_a_one_age_group_fine_tune_keeps_the_head_only_if_what_it_reads_is_unchanged(encoders_changed):
    """A hospital's adults-only validation clips cannot refit the head; it is kept while the encoders it reads
    stayed frozen (the default), and turned off when they were retrained or renormalised."""
    from avpenet.train import calibrate_unknown_age

    model = _model(5)
    _fit(model, _clips(500)[0])
    adults = [_clip("adult", 4, 600 + i) for i in range(3)]
    record = calibrate_unknown_age(
        model, adults, np.array([5.0, 6.0, 7.0]), _each_own(adults), head_kept_valid=not encoders_changed
    )
    assert not record["age_head"]["fitted"]
    assert float(model.fusion.infers_age) == (0.0 if encoders_changed else 1.0)


def test_a_run_saved_before_the_age_head_serves_requests_without_an_age_as_it_did(tmp_path):
    model = _model(2)
    x = with_age(_clip("adult", 3, 5), C.UNKNOWN_AGE)
    before = predict_windows(model, x)
    save_model(model, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    for key in ("fusion.age_head.weight", "fusion.age_head.bias", "fusion.infers_age"):
        del state[key]  # what runs saved before 2026-12-05 hold
    torch.save(state, tmp_path / "model.pt")
    loaded = load_model(tmp_path).model
    assert float(loaded.fusion.infers_age) == 0.0
    for name, value in before.items():
        np.testing.assert_array_equal(predict_windows(loaded, x)[name], value)


def test_a_head_is_not_fitted_on_too_few_subjects_of_a_group():
    """A tiny run's validation clips (one subject per group) were told apart by who the subjects are: the head
    fitted on them called itself 100% right, then read an adult clip as a neonate (P(adult) 0.01) and the
    gateway questioned the age group named. Below MIN_SUBJECTS_PER_GROUP it is left unfitted: the fusion
    reads no age (NOT_READ), so the gateway questions none."""
    model = _model(4)
    clips, ages = _clips(700)  # 6 clips of each group, but of two subjects each
    subjects = [f"{age}-{i // 2 % 2}" for i, age in enumerate(ages)]
    record = fit_age_head(model, clips, subjects)
    assert not record["fitted"] and record["subjects"] == {"neonate": 2, "adult": 2}
    assert (
        f"too few subjects: 2 neonate and 2 adult subject(s), {MIN_SUBJECTS_PER_GROUP} of each"
        in record["why"]
    )
    assert float(model.fusion.infers_age) == 0.0 and "in_sample_window_accuracy" not in record
    for x in clips:
        out = predict_windows(model, with_age(x, C.UNKNOWN_AGE))
        assert np.all(out[C.ADULT_PROBABILITY.name] == C.NOT_READ)
        assert adult_probability(out[C.ADULT_PROBABILITY.name], out[C.MODALITY_WEIGHTS.name]) is None


@pytest.mark.parametrize("fitted", [True, False])
def test_the_exported_fusion_infers_the_age_as_the_pytorch_model_does(tmp_path, fitted):
    """...and an unfitted head exports as it serves in PyTorch: every adult_probability NOT_READ."""
    import onnxruntime as ort

    from ensemble.onnx_export import dynamic_axes

    model = _model(3)
    if fitted:
        _fit(model, _clips(300)[0])
    spec = next(s for s in C.PARTS if s.name == "fusion")
    inputs = list(example_inputs(spec, batch=4, seed=7))
    at = [t.name for t in spec.inputs].index(C.AGE_GROUP.name)
    inputs[at] = torch.tensor([[0], [1], [2], [2]])
    path = tmp_path / "fusion.onnx"
    names = [t.name for t in (*spec.inputs, *spec.outputs)]
    torch.onnx.export(
        model.fusion, tuple(inputs), str(path), dynamo=False, opset_version=17,
        input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
        dynamic_axes={n: dynamic_axes(n) for n in names},
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {t.name: x.numpy() for t, x in zip(spec.inputs, inputs, strict=True)})
    with torch.no_grad():
        ref = model.fusion(*inputs)
    for t, g, r in zip(spec.outputs, got, ref, strict=True):
        assert np.abs(g - r.numpy()).max() <= 1e-4, t.name
    read = got[[t.name for t in spec.outputs].index(C.ADULT_PROBABILITY.name)]
    assert np.all((read >= 0) & (read <= 1)) if fitted else np.all(read == C.NOT_READ)
