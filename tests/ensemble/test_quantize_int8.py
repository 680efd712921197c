"""INT8 versions: `avpenet quantize` adds an int8 graph beside the fp32 one, the config chooses per part."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from support.gateway import face_track, wav_bytes

from avpenet import contract
from avpenet.features import audio, windows
from ensemble import DEFAULT_REPOSITORY, configs, quantize, versions
from ensemble.ort_chain import OrtChain, configured_onnx_file


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A copy of the committed repository with an int8 visual_encoder (the cheapest part to calibrate)."""
    repo = tmp_path_factory.mktemp("int8") / "model_repository"
    shutil.copytree(DEFAULT_REPOSITORY, repo)
    before = versions.latest(repo / contract.VISUAL_ENCODER.name)
    inputs = windows.model_inputs(audio.load_audio(wav_bytes(12.0)), face_track(12.0), "adult")
    report = quantize.quantize_repository(repo, inputs, ("visual_encoder",))
    return repo, before, report, inputs


def test_new_version_holds_both_graphs_and_the_same_source(quantized):
    repo, before, report, _ = quantized
    part = repo / contract.VISUAL_ENCODER.name
    row = report[contract.VISUAL_ENCODER.name]
    assert row["created"] and row["version"] == before + 1 and row["quantized_from_version"] == before
    folder = part / str(row["version"])
    assert (folder / "model.onnx").read_bytes() == (part / str(before) / "model.onnx").read_bytes()
    assert (folder / quantize.INT8_FILE).stat().st_size < (folder / "model.onnx").stat().st_size
    manifest = versions.read_manifest(part, row["version"])
    assert manifest["source"] == versions.read_manifest(part, before)["source"]
    assert set(report) == {contract.VISUAL_ENCODER.name}  # other parts untouched


def test_config_chooses_the_precision_per_part(quantized):
    repo, *_ = quantized
    configs.write_configs(repo)  # precision.json as committed: fp32
    assert configured_onnx_file(repo / contract.VISUAL_ENCODER.name) == "model.onnx"
    configs.write_configs(repo, precision={"visual_encoder": "int8", "fusion": "int8"})
    assert configured_onnx_file(repo / contract.VISUAL_ENCODER.name) == quantize.INT8_FILE
    # fusion has no int8 graph in its newest version: it stays fp32 rather than naming a missing file
    assert configured_onnx_file(repo / contract.FUSION.name) == "model.onnx"
    assert "precision: fp32 (int8 wanted" in (repo / contract.FUSION.name / "config.pbtxt").read_text()


def test_int8_scores_stay_close_to_fp32(quantized):
    repo, _, _, inputs = quantized
    configs.write_configs(repo, precision={"visual_encoder": "int8"})
    int8 = OrtChain(repo, threads=1)
    assert int8.graphs[contract.VISUAL_ENCODER.name].name == quantize.INT8_FILE
    fp32 = OrtChain(repo, threads=1, graphs={contract.VISUAL_ENCODER.name: "model.onnx"})
    a, b = fp32(inputs)[contract.SCORE.name], int8(inputs)[contract.SCORE.name]
    # a smoke bound (10 calibration windows of one face); `avpenet quantize --evaluate` judges accuracy
    assert np.all(np.isfinite(b)) and 0 < np.max(np.abs(a - b)) < 0.75
    assert abs(float(np.mean(a) - np.mean(b))) < 0.3  # the clip score


def test_unknown_precision_is_refused(tmp_path):
    path = tmp_path / "precision.json"
    path.write_text('{"parts": {"audio_frontend": "int4"}}')
    with pytest.raises(ValueError, match="int4"):
        configs.load_precision(path)
