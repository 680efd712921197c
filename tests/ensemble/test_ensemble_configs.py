"""The committed model repository: every config set agrees with each other and with the contract; current."""

from __future__ import annotations

import dataclasses
import errno
import json
import pathlib
import shutil
from pathlib import Path

import pytest
from support.digests import repository_snapshot
from tritonclient.grpc import model_config_pb2 as mc

from avpenet import contract
from ensemble import BACKEND_SOURCE, DEFAULT_REPOSITORY, configs, precision, versions
from ensemble.batching import load_plan

REPO = DEFAULT_REPOSITORY
DTYPE_NAMES = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64"}


def _tensors(entries) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(e.name, mc.DataType.Name(e.data_type), tuple(e.dims)) for e in entries]


def _contract_tensors(specs) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(t.name, DTYPE_NAMES[t.dtype], t.shape) for t in specs]


@pytest.mark.parametrize("model", contract.MODELS, ids=lambda m: m.name)
def test_default_and_gpu_configs_declare_the_contract_tensors(model: contract.ModelSpec) -> None:
    default = configs.parse(REPO / model.name / "config.pbtxt")
    gpu = configs.parse(REPO / model.name / "configs" / f"{configs.GPU_CONFIG_NAME}.pbtxt")
    for config in (default, gpu):
        assert config.name == model.name
        assert config.max_batch_size == contract.MAX_BATCH_SIZE
        assert _tensors(config.input) == _contract_tensors(model.inputs)
        assert _tensors(config.output) == _contract_tensors(model.outputs)
    assert _tensors(default.input) == _tensors(gpu.input) and _tensors(default.output) == _tensors(gpu.output)


def test_a_rollback_rewrites_the_config_for_the_version_left(tmp_path: Path, capsys) -> None:
    """The frontend's config names the fp32-DFT graph. After the documented rollback (the newest version
    deleted) it names what the version left holds: that graph where the version has it, else `model.onnx`,
    as for version 3, which predates it and which Triton could not load until the configs were rewritten."""
    copy = tmp_path / "model_repository"
    shutil.copytree(REPO, copy)
    frontend = copy / contract.AUDIO_FRONTEND.name
    dft32 = f'string_value: "{precision.ONNX_FILES["fp32-dft"]}"'
    assert dft32 in (frontend / "config.pbtxt").read_text()
    shutil.rmtree(frontend / str(versions.latest(frontend)))
    assert configs.main(["--repo", str(copy)]) == 0
    assert dft32 in (frontend / "config.pbtxt").read_text()  # the version left has the graph too
    assert str(frontend / "config.pbtxt") in capsys.readouterr().out
    (frontend / str(versions.latest(frontend)) / precision.ONNX_FILES["fp32-dft"]).unlink()  # as 3 had not
    assert configs.main(["--repo", str(copy)]) == 0
    config = (frontend / "config.pbtxt").read_text()
    assert f'string_value: "{precision.ONNX_FILES["fp32"]}"' in config
    assert "fp32-dft" not in config.split("parameters", 1)[1]


def test_a_rollback_rewrites_the_versions_the_ensemble_records_as_served(tmp_path: Path) -> None:
    """After the documented rollback the ensemble's record still named the deleted version in
    `steps_served`; it now names the versions left, and keeps the rest of the record."""
    copy = shutil.copytree(REPO, tmp_path / "model_repository")
    path = copy / contract.ENSEMBLE.name / "1" / versions.MANIFEST
    before = json.loads(path.read_text())
    fusion = copy / contract.FUSION.name
    newest = versions.latest(fusion)
    shutil.rmtree(fusion / str(newest))
    assert configs.main(["--repo", str(copy)]) == 0
    after = json.loads(path.read_text())
    assert after["steps_served"] == {**before["steps_served"], contract.FUSION.name: versions.latest(fusion)}
    assert after["steps_served"][contract.FUSION.name] < newest
    assert {k: v for k, v in after.items() if k != "steps_served"} == {
        k: v for k, v in before.items() if k != "steps_served"
    }


def test_a_rollback_to_a_fusion_without_the_age_output_drops_it_from_the_configs(tmp_path: Path) -> None:
    """adult_probability came with fusion 16: rolled back to an older fusion, whose graph lacks it, the
    configs must not name it (Triton would refuse to load the fusion, and the ensemble with it)."""
    copy = shutil.copytree(REPO, tmp_path / "model_repository")
    fusion = copy / contract.FUSION.name
    shutil.rmtree(fusion / str(versions.latest(fusion)))
    manifest = fusion / str(versions.latest(fusion)) / versions.MANIFEST  # stands for fusion 15's
    record = json.loads(manifest.read_text())
    del record["outputs"][contract.ADULT_PROBABILITY.name]
    manifest.write_text(json.dumps(record))
    assert configs.main(["--repo", str(copy)]) == 0
    older = [t for t in contract.FUSION.outputs if t != contract.ADULT_PROBABILITY]
    for model in (contract.FUSION, contract.ENSEMBLE):
        for path in (copy / model.name / "config.pbtxt", copy / model.name / "configs" / "gpu.pbtxt"):
            assert _tensors(configs.parse(path).output) == _contract_tensors(older), path
    steps = configs.parse(copy / contract.ENSEMBLE.name / "config.pbtxt").ensemble_scheduling.step
    assert all(contract.ADULT_PROBABILITY.name not in step.output_map for step in steps)


def test_the_onnx_chain_runs_a_repository_rolled_back_to_a_fusion_without_the_age_output(
    tmp_path: Path,
) -> None:
    """evaluate --repository, quantize's calibration and the peers run the served graphs with OrtChain,
    which asked every part for every contract output: a fusion older than 16 has no adult_probability."""
    import onnx

    from ensemble.ort_chain import OrtChain

    copy = shutil.copytree(REPO, tmp_path / "model_repository")
    fusion = copy / contract.FUSION.name
    folder = fusion / str(versions.latest(fusion))
    graph = onnx.load(folder / "model.onnx")  # made into an older fusion's: the output taken away
    kept = [o for o in graph.graph.output if o.name != contract.ADULT_PROBABILITY.name]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, folder / "model.onnx")
    record = json.loads((folder / versions.MANIFEST).read_text())
    del record["outputs"][contract.ADULT_PROBABILITY.name]
    (folder / versions.MANIFEST).write_text(json.dumps(record))
    assert configs.main(["--repo", str(copy)]) == 0
    out = OrtChain(copy, threads=1)(contract.zero_inputs(contract.ENSEMBLE, 2))
    assert set(out) == {t.name for t in contract.REQUIRED_OUTPUTS}
    assert out[contract.SCORE.name].shape == (2, 1)


def test_a_disk_error_while_writing_configs_leaves_every_config_whole(tmp_path: Path, monkeypatch) -> None:
    """Configs were written in place: a full disk mid-write left a truncated config.pbtxt (Triton refuses
    it) beside configs already rewritten for another plan."""
    copy = shutil.copytree(REPO, tmp_path / "model_repository")
    before = repository_snapshot(copy)
    original = pathlib.Path.write_text

    def half_then_full(self: Path, text: str, *args, **kwargs) -> int:
        if self.parent.name == contract.VISUAL_ENCODER.name and "config.pbtxt" in self.name:
            original(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full)
    plan = dataclasses.replace(load_plan(), intra_op_threads=3)  # every part's config changes
    with pytest.raises(OSError, match="No space left"):
        configs.write_configs(copy, plan)
    assert repository_snapshot(copy) == before


def test_configs_default_to_the_repository_export_writes(tmp_path: Path, monkeypatch) -> None:
    """Run from another folder, `python -m ensemble.configs` used to write a new ./model_repository there and
    leave the served repository's configs as they were."""
    copy = shutil.copytree(REPO, tmp_path / "model_repository")
    monkeypatch.setattr(configs, "DEFAULT_REPOSITORY", copy, raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (copy / contract.FUSION.name / "config.pbtxt").unlink()
    assert configs.main([]) == 0
    assert (copy / contract.FUSION.name / "config.pbtxt").read_bytes() == (
        REPO / contract.FUSION.name / "config.pbtxt"
    ).read_bytes()
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize("model", contract.PARTS, ids=lambda m: m.name)
def test_part_configs_batch_bound_the_queue_and_pick_their_hardware(model: contract.ModelSpec) -> None:
    default = configs.parse(REPO / model.name / "config.pbtxt")
    gpu = configs.parse(REPO / model.name / "configs" / f"{configs.GPU_CONFIG_NAME}.pbtxt")
    assert default.backend == "python" and default.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert gpu.platform == "onnxruntime_onnx" and gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    for config in (default, gpu):
        assert config.version_policy.latest.num_versions == configs.SERVED_VERSIONS
        assert not config.dynamic_batching.HasField("default_queue_policy")  # see the test below
        assert all(1 <= b <= contract.MAX_BATCH_SIZE for b in config.dynamic_batching.preferred_batch_size)
        assert {i for w in config.model_warmup for i in w.inputs} == {t.name for t in model.inputs}
    assert "max_queue_delay_microseconds" in (REPO / model.name / "config.pbtxt").read_text()


def test_ensemble_steps_form_the_documented_graph() -> None:
    config = configs.parse(REPO / contract.ENSEMBLE.name / "config.pbtxt")
    assert config.platform == "ensemble"
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [p.name for p in configs.STEP_ORDER]  # scheduling order matters
    assert set(configs.STEP_ORDER) == set(contract.PARTS)
    available = {t.name for t in contract.ENSEMBLE.inputs}
    for step, part in zip(steps, configs.STEP_ORDER, strict=True):
        assert step.model_version == -1
        assert (
            set(step.input_map) == {t.name for t in part.inputs} and set(step.input_map.values()) <= available
        )
        available |= set(step.output_map.values())
    assert {t.name for t in contract.ENSEMBLE.outputs} <= available


def test_committed_configs_are_what_the_generator_writes_now(tmp_path: Path) -> None:
    """A contract or config change must be followed by `avpenet export` (which rewrites the configs). Written
    into a copy of the repository: a part's precision falls back to fp32 where its newest version lacks the
    chosen graph, so the versions on disk are part of the input."""
    copy = tmp_path / "model_repository"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns("config.pbtxt", "configs"))
    for written in configs.write_configs(copy):
        relative = written.relative_to(copy)
        if relative == Path(precision.PRECISION_FILE):  # the copy's own choice: the committed one, copied
            assert precision.load_precision(written) == precision.load_precision()
            continue
        assert (REPO / relative).read_text() == written.read_text(), (
            f"{relative} is stale: run avpenet export"
        )


def test_another_repository_keeps_the_choice_it_followed_when_the_tracked_one_changes(tmp_path, monkeypatch):
    """A hospital's repository without a precision.json of its own followed ensemble/precision.json, so a
    change to that tracked file (a `git pull`) switched its served graphs at its next export, quantisation or
    config rewrite, unannounced. Its first config write now keeps a copy of the choice it followed."""
    copy = tmp_path / "hospital"
    shutil.copytree(REPO, copy)
    tracked = tmp_path / "tracked-precision.json"
    tracked.write_text(precision.choice_text({"audio_frontend": "fp32"}))
    monkeypatch.setattr(precision, "PRECISION_PATH", tracked)
    configs.write_configs(copy)
    assert precision.load_precision(copy / precision.PRECISION_FILE)["audio_frontend"] == "fp32"
    before = (copy / contract.AUDIO_FRONTEND.name / "config.pbtxt").read_text()
    tracked.write_text(precision.choice_text({"audio_frontend": "fp32-dft"}))  # the tracked choice moves on
    configs.write_configs(copy)
    assert (copy / contract.AUDIO_FRONTEND.name / "config.pbtxt").read_text() == before


@pytest.mark.parametrize("model", contract.PARTS, ids=lambda m: m.name)
def test_every_version_matches_its_manifest_and_serves_the_current_backend(model: contract.ModelSpec) -> None:
    folder = REPO / model.name
    found = versions.versions(folder)
    assert found, f"{model.name} has no version folder"
    for version in found:
        manifest = versions.read_manifest(folder, version)
        assert manifest["version"] == version and manifest["model"] == model.name
        for name, digest in manifest["files"].items():
            assert versions.sha256_file(folder / str(version) / name) == digest
        assert manifest["source"]["kind"] in ("checkpoint", "reference", "random-init")
    newest = folder / str(found[-1])
    assert (newest / "model.py").read_bytes() == BACKEND_SOURCE.read_bytes(), (
        "backend changed: run avpenet export"
    )


def test_versions_exported_from_the_committed_reference_name_its_files() -> None:
    """Every record whose weights are the committed reference's names its config.json and metrics too: a
    reference file edited after export (a machine's paths dropped, say) leaves them naming another file."""
    from avpenet.model import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, REFERENCE_DIR

    weights = versions.sha256_file(REFERENCE_DIR / CHECKPOINT_FILE)
    config = versions.sha256_file(REFERENCE_DIR / CONFIG_FILE)
    metrics = json.loads((REFERENCE_DIR / METRICS_FILE).read_text())
    records = {
        f"{part.name} {version}": versions.read_manifest(REPO / part.name, version)["source"]
        for part in contract.PARTS
        for version in versions.versions(REPO / part.name)
    }
    records["ensemble"] = json.loads((REPO / contract.ENSEMBLE.name / "1" / versions.MANIFEST).read_text())[
        "source"
    ]
    ours = {where: source for where, source in records.items() if source.get("checkpoint_sha256") == weights}
    assert "ensemble" in ours and len(ours) > 1, "the served ensemble was not exported from avpenet/reference"
    for where, source in ours.items():
        assert source["config_sha256"] == config, f"{where}: config.json changed since its export"
        assert source["metrics"] == metrics, f"{where}: metrics.json changed since its export"


def test_repository_is_small_enough_to_commit() -> None:
    total = sum(p.stat().st_size for p in REPO.rglob("*") if p.is_file())
    assert total < 25 * 1024 * 1024
    ensemble_manifest = json.loads((REPO / contract.ENSEMBLE.name / "1" / versions.MANIFEST).read_text())
    assert ensemble_manifest["steps_served"] == {
        p.name: versions.latest(REPO / p.name) for p in contract.PARTS
    }


@pytest.mark.parametrize("model", contract.PARTS, ids=lambda m: m.name)
def test_no_part_turns_off_tritons_payload_prefetching(model: contract.ModelSpec) -> None:
    """A queue bound, a queue timeout or per-request timeouts turn off Triton's prefetching (core
    scheduler_utils.cc `support_prefetching_`), and without it Triton 2.51 held a request that arrived while
    the part's one instance was busy up to 500 ms (`python -m loadtests.queue_stall`; ensemble/configs.py).
    A 60-s clip therefore waits in a part's queue as long as it must, and overload is bounded in front of
    Triton (the gateway's request slots), not by Triton rejecting."""
    for path in (REPO / model.name / "config.pbtxt", REPO / model.name / "configs" / "gpu.pbtxt"):
        batching = configs.parse(path).dynamic_batching
        policy = batching.default_queue_policy
        assert not batching.priority_levels and not batching.priority_queue_policy, path
        assert policy.max_queue_size == 0 and policy.default_timeout_microseconds == 0, path
        assert not policy.allow_timeout_override, path
