"""A part's version does not depend on the float bits of the exporting CPU, yet every real change bumps it.

Another CPU is simulated by moving every float constant of every exported part by 1 ULP (what BatchNorm
folding on another SIMD path does); re-exporting the same checkpoint must then add nothing. A meaningful
change of one weight, a changed backend or a changed graph must still give exactly that part a new version.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, export, graph_diff, versions

ONNX = "model.onnx"
pytestmark = pytest.mark.filterwarnings("ignore")  # the tracer's notes on constants; parity proves the graph


@pytest.fixture(scope="module")
def reference():
    """The committed reference checkpoint as a model, and its manifest source record."""
    return export.load_source(None)


@pytest.fixture(scope="module")
def fresh(reference, tmp_path_factory) -> Path:
    """A repository freshly exported on this machine from the reference: version 1 of every part."""
    repo = tmp_path_factory.mktemp("fresh")
    report = export.export_repository(reference[0], repo, reference[1], keep=5)
    assert all(row["version"] == 1 for row in report.values())
    return repo


def _nudged(data: bytes, seed: int) -> bytes:
    """`data` with every element of every float constant moved 1 ULP up or down (randomly)."""
    model = onnx.load_from_string(data)
    rng = np.random.default_rng(seed)
    for tensor in graph_diff.float_tensors(model.graph):
        values = numpy_helper.to_array(tensor)
        towards = np.where(rng.random(values.shape) < 0.5, -np.inf, np.inf).astype(values.dtype)
        tensor.CopyFrom(numpy_helper.from_array(np.nextafter(values, towards), tensor.name))
    return model.SerializeToString()


def _copy(repo: Path, tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(repo, target)
    return target


def test_one_ulp_on_every_float_constant_adds_no_version(reference, fresh: Path, tmp_path: Path) -> None:
    repo = _copy(fresh, tmp_path)
    for i, spec in enumerate(contract.PARTS):  # as if version 1 had been exported on another CPU
        path = repo / spec.name / "1" / ONNX
        original = path.read_bytes()
        nudged = _nudged(original, seed=i)
        assert nudged != original and graph_diff.differences(nudged, original) == []
        path.write_bytes(nudged)
    on_disk = {spec.name: (repo / spec.name / "1" / ONNX).read_bytes() for spec in contract.PARTS}

    report = export.export_repository(reference[0], repo, reference[1], keep=5)

    assert {p.name: (report[p.name]["version"], report[p.name]["created"]) for p in contract.PARTS} == {
        p.name: (1, False) for p in contract.PARTS
    }
    for spec in contract.PARTS:  # the served files are left alone, not rewritten with this CPU's bits
        assert versions.versions(repo / spec.name) == [1]
        assert (repo / spec.name / "1" / ONNX).read_bytes() == on_disk[spec.name]


def test_the_committed_repository_is_what_this_machine_exports(fresh: Path) -> None:
    """Re-exporting the committed reference here adds nothing to model_repository/ (whatever CPU made it)."""
    for spec in contract.PARTS:
        exported = {name: (fresh / spec.name / "1" / name).read_bytes() for name in (ONNX, "model.py")}
        committed = DEFAULT_REPOSITORY / spec.name / str(versions.latest(DEFAULT_REPOSITORY / spec.name))
        assert versions.changed_files(committed, exported) == {}, spec.name


def test_a_meaningful_change_of_one_weight_bumps_that_part_alone(
    reference, fresh: Path, tmp_path: Path
) -> None:
    part = contract.AUDIO_ENCODER  # the part with the most BatchNorm folding (fusion: test_ensemble_versions)
    repo = _copy(fresh, tmp_path)
    model = copy.deepcopy(reference[0])
    weight = next(p for p in model.part(part.name).parameters() if p.dim() >= 2)  # a conv kernel, BN-folded
    with torch.no_grad():
        weight.view(-1)[0] += 0.01 * weight.abs().max()  # one element, 1% of the tensor's scale

    report = export.export_repository(model, repo, {"kind": "in-memory", "note": "test"}, keep=5)

    assert {p.name for p in contract.PARTS if report[p.name]["created"]} == {part.name}
    assert report[part.name]["version"] == 2
    manifest = versions.read_manifest(repo / part.name, 2)
    assert manifest["previous_version"] == 1 and list(manifest["changes_from_previous"]) == [ONNX]
    assert "max |diff|" in manifest["changes_from_previous"][ONNX][0]


def test_a_changed_backend_bumps_its_part(fresh: Path, tmp_path: Path) -> None:
    repo = _copy(fresh, tmp_path)
    folder = repo / contract.FUSION.name
    files = {name: (folder / "1" / name).read_bytes() for name in (ONNX, "model.py")}
    assert versions.add_version(folder, files, {}) == (1, False)
    files["model.py"] += b"\n# a backend change\n"
    assert versions.add_version(folder, files, {}) == (2, True)
    assert versions.read_manifest(folder, 2)["changes_from_previous"] == {"model.py": ["sha256 differs"]}


# --- graph_diff on small hand-built graphs ------------------------------------------------------------------
def _graph(scale: np.ndarray, op: str = "Mul", opset: int = 17) -> bytes:
    node = helper.make_node(op, ["x", "scale"], ["y"])
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = helper.make_graph([node], "g", [io[0]], [io[1]], [numpy_helper.from_array(scale, "scale")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def test_graph_diff_tolerance_is_scaled_by_the_tensor_and_structure_is_exact() -> None:
    scale = np.array([1.0, -0.5, 1e-9, 0.0], np.float32)
    limit = graph_diff.ULP_BUDGET * graph_diff.FLOAT32_EPS  # relative to max |scale| = 1
    inside, outside = scale.copy(), scale.copy()
    inside[2] += 0.9 * limit  # huge relative to the element itself, tiny relative to the tensor
    outside[1] += 2 * limit
    assert graph_diff.differences(_graph(inside), _graph(scale)) == []
    (why,) = graph_diff.differences(_graph(outside), _graph(scale))
    assert why.startswith("scale: max |diff|")
    assert graph_diff.differences(_graph(scale, op="Add"), _graph(scale)) != []
    assert graph_diff.differences(_graph(scale, opset=18), _graph(scale)) != []
    assert graph_diff.differences(_graph(scale.astype(np.float64)), _graph(scale)) != []
    nan = scale.copy()
    nan[3] = np.nan
    assert graph_diff.differences(_graph(nan), _graph(nan)) == []
    assert graph_diff.differences(_graph(nan), _graph(scale)) == ["scale: non-finite values differ"]
