"""The GPU model-stage measure (loadtests.device_stage), run here on the CPU alone.

Its GPU variants need a GPU; what CI can check is the request shapes it times, the saved inputs a bare GPU
machine reads, and that every variant is compared with the reference on the same requests.
"""

from __future__ import annotations

import numpy as np
import pytest

from avpenet import contract
from avpenet.features import windows
from ensemble import export
from loadtests import clips, device_stage


@pytest.fixture(scope="module")
def served():
    """The largest stack and the 58-window clip, from 5 s of cry audio and random face features."""
    rng = np.random.default_rng(0)
    frames = 5 * contract.FPS
    feats = rng.standard_normal((frames, contract.VISUAL_FEATURE_DIM)).astype(np.float32)
    tensors = windows.inputs_from_features(clips.cry_audio(5.0), feats, np.ones(frames), "neonate")
    return device_stage.served_requests(tensors)


def test_shapes_are_the_batchers_stacks_and_the_long_clip(served):
    shapes = device_stage.request_shapes(*served)
    assert list(shapes) == ["1 window", "8 windows", "32 windows", "64 windows", "58-window clip"]
    for b in device_stage.BATCHES:
        request = shapes[f"{b} window{'s' * (b > 1)}"]
        assert set(request) == {t.name for t in contract.ENSEMBLE.inputs}
        assert request[contract.AUDIO.name].shape == (b, contract.audio_row_samples(1))
        np.testing.assert_array_equal(request[contract.WINDOW_GAIN.name], 1.0)
    clip = shapes["58-window clip"]
    assert clip[contract.AUDIO.name].shape == (58, contract.audio_row_samples(58))


def test_saved_requests_read_back_unchanged(served, tmp_path):
    path = tmp_path / "requests.npz"
    device_stage.save_requests(path, *served)
    for saved, read in zip(served, device_stage.load_requests(path), strict=True):
        assert set(saved) == set(read)
        for name, value in saved.items():
            np.testing.assert_array_equal(read[name], value)


def test_every_variant_is_compared_with_the_reference(served):
    shapes = device_stage.request_shapes(*served)
    requests = {k: shapes[k] for k in ("1 window", "8 windows")}
    report = device_stage.measure("cpu", requests, seconds=0.0)
    reference, onnx = report
    assert onnx == "cpu onnxruntime, served graphs"
    for shape in requests:
        assert report[reference][shape]["max_abs_score"] == 0.0
        assert report[onnx][shape]["ms"] > 0
        # the served graphs (fp32-DFT frontend) score as the PyTorch model does, well inside a rounding step
        assert report[onnx][shape]["max_abs_score"] < 1e-3
        assert report[onnx][shape]["max_abs_log_mel"] <= export.FP32_DFT_ATOL
    table = device_stage.markdown(report, {"gpu": "none"})
    assert table.count("| cpu onnxruntime, served graphs |") == len(requests)


def test_an_optional_variant_that_cannot_start_is_reported_not_fatal(served, monkeypatch, capsys):
    def broken():
        raise RuntimeError("no tritonclient")

    reference = device_stage.variants("cpu")
    name = next(iter(reference))
    monkeypatch.setattr(device_stage, "variants", lambda device: {name: reference[name], "broken": broken})
    requests = {"1 window": device_stage.request_shapes(*served)["1 window"]}
    assert list(device_stage.measure("cpu", requests, seconds=0.0)) == [name]
    assert "broken: not measured (RuntimeError: no tritonclient)" in capsys.readouterr().out
    monkeypatch.setattr(device_stage, "variants", lambda device: {"broken": broken})
    with pytest.raises(RuntimeError):
        device_stage.measure("cpu", requests, seconds=0.0)
