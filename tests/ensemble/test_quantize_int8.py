"""INT8 versions: `avpenet quantize` adds an int8 graph beside the fp32 one, the config chooses per part."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
from support.digests import tree_digest
from support.gateway import face_track, wav_bytes

from avpenet import contract
from avpenet.features import audio, windows
from ensemble import (
    DEFAULT_REPOSITORY,
    PROJECT_ROOT,
    configs,
    precision,
    precision_measure,
    quantize,
    versions,
)
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


def test_config_chooses_the_precision_per_part(quantized, tmp_path):
    repo = shutil.copytree(quantized[0], tmp_path / "model_repository")  # the shared fixture stays intact
    configs.write_configs(repo)  # precision.json as committed: fp32
    assert configured_onnx_file(repo / contract.VISUAL_ENCODER.name) == "model.onnx"
    # a newest version without an int8 graph (e.g. re-exported since) stays fp32, not a missing file
    fusion = repo / contract.FUSION.name
    (fusion / str(versions.latest(fusion)) / quantize.INT8_FILE).unlink(missing_ok=True)
    configs.write_configs(repo, precision={"visual_encoder": "int8", "fusion": "int8"})
    assert configured_onnx_file(repo / contract.VISUAL_ENCODER.name) == quantize.INT8_FILE
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


def test_a_copy_of_the_repository_carries_its_own_precision_choice(quantized, tmp_path) -> None:
    """`avpenet quantize --repo COPY` says the new versions still serve fp32 and names the command for COPY
    (it used to say "edit ensemble/precision.json, then `python -m ensemble.configs`": the committed
    repository's choice and configs). The quantisation left COPY its own precision.json (the choice it
    followed); that command rewrites it, the configs an export or a quantisation rewrites keep it, and
    ensemble/precision.json and the committed repository are left alone."""
    repo = shutil.copytree(quantized[0], tmp_path / "copy")
    committed = precision.PRECISION_PATH.read_bytes(), tree_digest(DEFAULT_REPOSITORY)
    made = {"visual_encoder": quantized[2]["visual_encoder"]["version"]}
    note = precision.int8_note(repo, made, "copy")
    assert "still serves fp32" in note and "--repo copy --precision visual_encoder=int8" in note
    assert f"{repo / 'precision.json'} chooses fp32" in note and f"writes {repo / 'precision.json'}" in note
    assert configs.main(["--repo", str(repo), "--precision", "visual_encoder=int8"]) == 0
    own = precision.load_precision(repo / "precision.json")
    assert own == {**precision.load_precision(), "visual_encoder": "int8"}  # the rest as the copy served it
    configs.write_configs(repo)  # what `avpenet export` / `quantize` into the copy render: the choice holds
    assert configured_onnx_file(repo / contract.VISUAL_ENCODER.name) == quantize.INT8_FILE
    assert precision.int8_note(repo, made).startswith("served at int8: visual_encoder version")
    assert (precision.PRECISION_PATH.read_bytes(), tree_digest(DEFAULT_REPOSITORY)) == committed
    assert precision.own_path(DEFAULT_REPOSITORY) == precision.PRECISION_PATH  # its choice stays tracked
    with pytest.raises(ValueError, match="--precision"):
        configs.main(["--repo", str(repo), "--precision", "audio_frontend=int8"])


def test_unknown_precision_is_refused(tmp_path):
    path = tmp_path / "precision.json"
    path.write_text('{"parts": {"audio_frontend": "int4"}}')
    with pytest.raises(ValueError, match="int4"):
        precision.load_precision(path)


def test_the_committed_int8_versions_keep_the_fp32_graph_they_were_made_from() -> None:
    """The published int8 versions serve the same fp32 graph as before (precision.json: fp32, so the parity
    tests against PyTorch still hold); the int8 graph is beside it, smaller."""
    for part in quantize.DEFAULT_PARTS:
        folder = DEFAULT_REPOSITORY / part
        newest = versions.latest(folder)
        manifest = versions.read_manifest(folder, newest)
        made_from = manifest["int8"]["quantized_from_version"]
        assert (folder / str(newest) / quantize.INT8_FILE).exists(), part
        if made_from in versions.versions(folder):
            fp32 = (folder / str(newest) / "model.onnx").read_bytes()
            assert fp32 == (folder / str(made_from) / "model.onnx").read_bytes(), part
        assert manifest["files"][quantize.INT8_FILE] == versions.sha256_file(
            folder / str(newest) / quantize.INT8_FILE
        )
    served = precision.load_precision()
    assert {served[p] for p in quantize.QUANTISABLE} == {"fp32"}, "int8 by default breaks the parity tests"


def test_stage_timing_covers_the_served_shapes_per_part(quantized):
    """`avpenet quantize`'s timing: the model mix's stacked windows and one 58-window clip, every part,
    both chains (no timing asserted: speed figures live in the docs, from the CLI)."""
    repo, _, _, inputs = quantized
    requests = precision_measure.stage_requests(inputs)
    long = requests[f"{precision_measure.LONG_WINDOWS}-window clip"]
    n = precision_measure.LONG_WINDOWS
    assert long[contract.AUDIO.name].shape == contract.batch_shape(contract.AUDIO, n)
    assert long[contract.WINDOW_GAIN.name].shape == (precision_measure.LONG_WINDOWS, 1)
    scores = OrtChain(repo, threads=1)(long)[contract.SCORE.name]
    assert scores.shape[0] == precision_measure.LONG_WINDOWS and np.all(np.isfinite(scores))
    assert len(requests) == len(precision_measure.BATCHES) + 1
    shapes = (next(iter(requests)), f"{precision_measure.LONG_WINDOWS}-window clip")  # 1 window and the clip
    stage = precision_measure.stage_ms(repo, {"visual_encoder": "int8"}, inputs, rounds=1, shapes=shapes)
    assert tuple(stage) == shapes
    for row in stage.values():
        for name in ("fp32", "chosen"):
            assert set(row[name]) == {*(p.name for p in contract.PARTS), "chain"}
        assert row["speedup"] > 0 and 0 < row["frontend_share_fp32"] < 1


def test_accuracy_settings_are_fp32_each_part_alone_and_all() -> None:
    settings = precision_measure.settings_of({"audio_encoder": "int8", "fusion": "int8"})
    assert settings == {
        "fp32": {},
        "audio_encoder int8": {"audio_encoder": "int8"},
        "fusion int8": {"fusion": "int8"},
        "all chosen": {"audio_encoder": "int8", "fusion": "int8"},
    }


def test_the_fusion_quantises_its_weight_matmuls_dynamically(quantized) -> None:
    """Static QDQ MatMuls were no faster than fp32 on either CPU measured; the fusion's int8 graph quantises
    its activations per call (DynamicQuantizeLinear + MatMulInteger) and needs no calibration ranges."""
    import onnx

    repo, _, _, inputs = quantized
    folder = repo / contract.FUSION.name
    fp32 = (folder / str(versions.latest(folder)) / "model.onnx").read_bytes()
    values = OrtChain(repo, graphs={p.name: "model.onnx" for p in contract.PARTS}).all_tensors(inputs)
    nodes = onnx.load_from_string(quantize.quantize_part(fp32, contract.FUSION, values)).graph.node
    ops = {n.op_type for n in nodes}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "QuantizeLinear" not in ops
    # the age head of requests without an age stays fp32 (its output picks an age embedding)
    head = {n.op_type for n in nodes if "/age_head/" in n.name}
    assert head and head <= {"Gemm", "MatMul", "Add"}, head
    committed = versions.read_manifest(DEFAULT_REPOSITORY / contract.FUSION.name, versions.latest(folder))
    assert committed["int8"]["method"] == quantize.DYNAMIC_METHOD


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("audio_frontend=fp32-dft", True),
        ("audio_frontend=fp32-dft, fusion=int8", True),
        ("audio_frontend", False),
        ("fusion=fp32-dft", False),
        ("audio_encoder=fp32", False),
        ("", False),
    ],
)
def test_a_choice_names_each_part_and_a_precision_it_has(text: str, ok: bool) -> None:
    if ok:
        assert set(precision_measure.parse_choice(text).values()) <= {"fp32-dft", "int8"}
    else:
        with pytest.raises(ValueError, match="--choose"):
            precision_measure.parse_choice(text)


_QUANTIZE_THE_VISUAL_ENCODER = """
import logging, sys
import numpy as np
from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, quantize, versions
part = DEFAULT_REPOSITORY / contract.VISUAL_ENCODER.name
fp32 = (part / str(versions.latest(part)) / "model.onnx").read_bytes()
quantize.quantize_part(fp32, contract.VISUAL_ENCODER, dict(np.load(sys.argv[1])))
logging.warning("a later warning still shows")
"""


def test_quantising_prints_no_per_tensor_notes(tmp_path) -> None:
    """`avpenet quantize` printed "WARNING:root:Axis 1 is out-of-range for weight 'part.norm.weight' with
    rank 1" three times: onnxruntime's QDQ quantizer on each rank-1 normalisation scale, which it quantises
    per tensor as the measured int8 graphs always had. Run as a user runs it (a fresh process, stderr as
    printed): none now, and a warning logged afterwards still prints."""
    inputs = windows.model_inputs(audio.load_audio(wav_bytes(12.0)), face_track(12.0), "adult")
    chain = OrtChain(DEFAULT_REPOSITORY, graphs={p.name: "model.onnx" for p in contract.PARTS})
    values = chain.all_tensors(inputs)
    np.savez(tmp_path / "v.npz", **{t.name: values[t.name] for t in contract.VISUAL_ENCODER.inputs})
    argv = [sys.executable, "-c", _QUANTIZE_THE_VISUAL_ENCODER, str(tmp_path / "v.npz")]
    run = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "out-of-range" not in run.stderr
    assert "WARNING:root:a later warning still shows" in run.stderr


def test_only_the_per_tensor_note_is_dropped() -> None:
    """The filter drops that one record of onnxruntime's quantizer: its other warnings, and the same words
    logged anywhere else, still show."""

    def record(path: str, msg: str, *args) -> logging.LogRecord:
        return logging.LogRecord("root", logging.WARNING, path, 1, msg, args, None)

    note = "Axis %s is out-of-range for weight '%s' with rank %s"
    quantizer = "/site-packages/onnxruntime/quantization/qdq_quantizer.py"
    assert not quantize.not_a_per_tensor_note(record(quantizer, note, 1, "part.norm.weight", 1))
    assert quantize.not_a_per_tensor_note(record(quantizer, "Expected bias '%s' to be an initializer", "b"))
    assert quantize.not_a_per_tensor_note(record("/project/mine.py", note, 1, "w", 1))
