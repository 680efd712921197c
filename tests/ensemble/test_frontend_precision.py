"""The frontend's fp32-DFT graph: `avpenet export` writes it beside model.onnx, precision.json chooses it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from support.gateway import face_track

from avpenet import contract
from avpenet.features import windows
from ensemble import DEFAULT_REPOSITORY, configs, export, precision, precision_measure, versions
from ensemble.ort_chain import configured_onnx_file
from loadtests.clips import cry_audio

FRONTEND = contract.AUDIO_FRONTEND.name
FP32_DFT = configs.ONNX_FILES["fp32-dft"]


def _requests() -> list[dict[str, np.ndarray]]:
    """Cry-like sound from loud to 40 dB quieter (the DFT's rounding is relative), a face in every frame."""
    out = []
    for seed, level_db in enumerate((0, -20, -40)):
        wave = cry_audio(20.0, seed) * np.float32(10 ** (level_db / 20))
        out.append(windows.model_inputs(wave, face_track(20.0, seed), ("neonate", "adult")[seed % 2]))
    return out


def test_the_served_frontend_version_holds_both_graphs() -> None:
    folder = DEFAULT_REPOSITORY / FRONTEND
    newest = versions.latest(folder)
    manifest = versions.read_manifest(folder, newest)
    for name in ("model.onnx", FP32_DFT):
        assert manifest["files"][name] == versions.sha256_file(folder / str(newest) / name)
    assert 0 < manifest["fp32_dft_max_abs_diff_vs_fp64_torch"] <= export.FP32_DFT_ATOL


def test_fp32_dft_log_mel_and_scores_stay_close_to_the_float64_frontend() -> None:
    """The bounds ensemble/README.md states: log-mel within FP32_DFT_ATOL, window scores within 1e-3 (seen:
    3e-3 and 3e-5 at most); a graph with a bin or a frame out of place misses both by orders of magnitude."""
    fp64 = precision_measure.chain_of(DEFAULT_REPOSITORY, {}, threads=1)
    fp32 = precision_measure.chain_of(DEFAULT_REPOSITORY, {FRONTEND: "fp32-dft"}, threads=1)
    for request in _requests():
        a, b = fp64.all_tensors(request), fp32.all_tensors(request)
        assert np.abs(a[contract.LOG_MEL.name] - b[contract.LOG_MEL.name]).max() <= export.FP32_DFT_ATOL
        score = contract.SCORE.name
        assert np.abs(a[score] - b[score]).max() <= 1e-3
        assert not np.array_equal(a[contract.LOG_MEL.name], b[contract.LOG_MEL.name])  # two graphs ran


def test_precision_json_chooses_the_frontend_graph(tmp_path) -> None:
    repo = tmp_path / "model_repository"
    shutil.copytree(DEFAULT_REPOSITORY, repo)
    configs.write_configs(repo, precision={FRONTEND: "fp32"})
    assert configured_onnx_file(repo / FRONTEND) == "model.onnx"
    configs.write_configs(repo, precision={FRONTEND: "fp32-dft", "visual_encoder": "int8"})
    assert configured_onnx_file(repo / FRONTEND) == FP32_DFT
    gpu = f"configs/{configs.GPU_CONFIG_NAME}.pbtxt"
    # CPU choices: the GPU serves the fp32 graphs (the frontend's float64 DFT: TF32 would round the other)
    assert configs.parse(repo / FRONTEND / gpu).default_model_filename == "model.onnx"
    assert configs.parse(repo / "visual_encoder" / gpu).default_model_filename == "model.onnx"
    # a newest version without the graph (exported before it existed) serves fp32 rather than a missing file
    (repo / FRONTEND / str(versions.latest(repo / FRONTEND)) / FP32_DFT).unlink()
    configs.write_configs(repo, precision={FRONTEND: "fp32-dft"})
    assert configured_onnx_file(repo / FRONTEND) == "model.onnx"
    assert "precision: fp32 (fp32-dft wanted" in (repo / FRONTEND / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    "parts", [{FRONTEND: "int8"}, {"audio_encoder": "fp32-dft"}, {"fusion": "fp16"}, {"nope": "fp32"}]
)
def test_a_precision_the_part_does_not_have_is_refused(tmp_path, parts) -> None:
    path = tmp_path / "precision.json"
    path.write_text(json.dumps({"parts": parts}))
    with pytest.raises(ValueError, match="unknown parts or precisions"):
        precision.load_precision(path)
