"""loadtests.triton_gpu: the PyTorch parts' configs and repository, and their answers through Triton."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, configs
from ensemble.batching import load_plan
from ensemble.versions import latest
from loadtests import triton_gpu


@pytest.mark.parametrize("part", contract.PARTS, ids=lambda p: p.name)
def test_torch_config_batches_as_the_gpu_config_and_checks_as_the_cpu_one(part: contract.ModelSpec) -> None:
    plan = load_plan()
    gpu, cpu = configs.part_gpu_config(part, plan), configs.part_config(part, plan)
    torch_gpu = configs.part_torch_gpu_config(part, plan)
    assert torch_gpu.backend == "python" and not torch_gpu.platform and not torch_gpu.default_model_filename
    assert torch_gpu.instance_group == gpu.instance_group
    assert torch_gpu.dynamic_batching == gpu.dynamic_batching and torch_gpu.model_warmup == gpu.model_warmup
    assert dict(torch_gpu.parameters) == dict(cpu.parameters)
    on_cpu = configs.part_torch_gpu_config(part, plan, "CPU")
    assert on_cpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_the_gpu_configs_give_the_frontend_more_instances_than_the_other_parts() -> None:
    counts = {
        p.name: configs.parse(DEFAULT_REPOSITORY / p.name / "configs" / "gpu.pbtxt").instance_group[0].count
        for p in contract.PARTS
    }
    assert counts.pop(contract.AUDIO_FRONTEND.name) == configs.INSTANCES_GPU[contract.AUDIO_FRONTEND.name] > 1
    assert set(counts.values()) == {1}


def test_repositories_shim_every_part_and_leave_the_committed_one_alone(tmp_path) -> None:
    before = {p.name: (DEFAULT_REPOSITORY / p.name / "config.pbtxt").read_bytes() for p in contract.PARTS}
    served = triton_gpu.repository(tmp_path, None)
    torch_cpu = triton_gpu.repository(tmp_path, "CPU", {contract.FUSION.name: 2})
    for part in contract.PARTS:
        newest = str(latest(DEFAULT_REPOSITORY / part.name))
        assert (
            "import DlpackModel as TritonPythonModel"
            in (served / part.name / newest / "model.py").read_text()
        )
        assert (served / part.name / "config.pbtxt").read_bytes() == before[part.name]
        shim = (torch_cpu / part.name / newest / "model.py").read_text()
        assert (
            "import TritonPythonModel as TritonPythonModel" in shim and str(DEFAULT_REPOSITORY.parent) in shim
        )
        group = configs.parse(torch_cpu / part.name / "config.pbtxt").instance_group[0]
        assert group.kind == mc.ModelInstanceGroup.KIND_CPU
        assert group.count == (2 if part is contract.FUSION else configs.INSTANCES_GPU.get(part.name, 1))
        assert (DEFAULT_REPOSITORY / part.name / "config.pbtxt").read_bytes() == before[part.name]


@pytest.mark.integration  # starts a real Triton whose four stubs import PyTorch
def test_the_pytorch_parts_answer_as_the_served_graphs(tmp_path) -> None:
    from ensemble.onnx_export import valid_inputs
    from ensemble.ort_chain import OrtChain
    from ensemble.server import TritonServer

    request = valid_inputs(contract.ENSEMBLE, batch=3, seed=4)
    expected = OrtChain()(request)
    repo = triton_gpu.repository(tmp_path, "CPU", {contract.AUDIO_FRONTEND.name: 1})
    with TritonServer(repo=repo, ready_timeout_s=triton_gpu.READY_TIMEOUT_S) as server:
        cells, answers = triton_gpu.run_variant(server, {"three windows": request}, [2], 0.5)
    for name, value in expected.items():
        np.testing.assert_allclose(answers["three windows"][name], value, atol=1e-4, err_msg=name)
    cell = cells["three windows"][2]
    assert cell["requests"] > 0 and cell["windows_per_s"] == pytest.approx(3 * cell["requests_per_s"])
    assert all(part["avg_batch"] >= 3 for part in cell["parts"].values())  # each request is 3 windows


def test_report_has_a_row_per_variant_and_concurrency() -> None:
    parts = {
        p.name: {"avg_batch": 2.0, "compute_ms_per_exec": 3.0, "queue_ms_per_request": 0.5}
        for p in contract.PARTS
    }
    row = {"requests_per_s": 10.0, "windows_per_s": 580.0, "p50_ms": 50.0, "p99_ms": 80.0, "parts": parts}
    report = {
        "variants": {"cpu served": {"long": {1: row, 8: row}}, "gpu torch": {"long": {1: row}}},
        "max_abs_diff": {"cpu served": {"score": 0.0}, "gpu torch": {"score": 1e-6}},
    }
    text = triton_gpu.markdown(report, {"gpu": "x"})
    assert text.count("| cpu served |") == 2 and text.count("| gpu torch |") == 1
    assert "| gpu torch | 1 | 10.0 | 580 | 50.0 | 80.0 | 2.0 / 3.0 / 0.5 |" in text
    assert "gpu torch, largest difference from cpu served: score 1.0e-06" in text


def test_instances_name_a_part_and_a_positive_count() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    assert triton_gpu.parse_instances(parser, "audio_frontend=2,fusion=3") == {
        "audio_frontend": 2,
        "fusion": 3,
    }
    assert triton_gpu.parse_instances(parser, "") == {}
    for bad in ("frontend=2", "fusion=0", "fusion=x", "fusion"):
        with pytest.raises(SystemExit):
            triton_gpu.parse_instances(parser, bad)


def test_write_repo_leaves_a_repository_the_bench_can_serve(tmp_path, capsys) -> None:
    assert triton_gpu.main(["--write-repo", str(tmp_path), "--kind", "cpu", "--instances", "fusion=2"]) == 0
    repo = Path(capsys.readouterr().out.strip())
    assert repo == tmp_path / "torch-cpu"
    for part in contract.PARTS:
        config = configs.parse(repo / part.name / "config.pbtxt")
        assert config.backend == "python" and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert configs.parse(repo / contract.FUSION.name / "config.pbtxt").instance_group[0].count == 2
    assert (repo / contract.ENSEMBLE.name / "config.pbtxt").exists()
