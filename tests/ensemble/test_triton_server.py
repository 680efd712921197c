"""The committed repository on the real tritonserver: PyTorch parity, dynamic batching, readable errors."""

from __future__ import annotations

import asyncio
import csv
import time

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, configs, export, versions
from ensemble.client import COUNT, EXEC_COUNT, infer_inputs, metrics_delta, read_metrics
from ensemble.onnx_export import run_torch, valid_inputs
from ensemble.ort_chain import configured_onnx_file
from ensemble.server import TritonServer

pytestmark = pytest.mark.integration
# Against the PyTorch model (float64 DFT). A frontend served with its DFT in float32 (precision.json) moves
# the log-mel by up to export.FP32_DFT_ATOL in the quietest bands and the outputs by ~3e-5 (seen), so its
# bounds are wider; a wrong graph or a contract slip still misses them by orders of magnitude.
FP32_DFT_SERVED = (
    configured_onnx_file(DEFAULT_REPOSITORY / contract.AUDIO_FRONTEND.name)
    == (configs.ONNX_FILES["fp32-dft"])
)
SCORE_TOL = OUTPUT_TOL = 1e-3 if FP32_DFT_SERVED else 1e-4  # the ensemble: every window went through it
LOG_MEL_TOL = export.FP32_DFT_ATOL if FP32_DFT_SERVED else 1e-4
PART_TOL = 1e-4  # a model part alone, given its own inputs: the frontend's precision does not reach it


def _served_source(spec: contract.ModelSpec) -> dict:
    folder = DEFAULT_REPOSITORY / spec.name
    return versions.read_manifest(folder, versions.latest(folder))["source"]


def _served_model(spec: contract.ModelSpec):
    """The PyTorch model the served version of `spec` was exported from (its manifest names the source)."""
    return export.model_from_source(_served_source(spec))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Windows of AVPE-Synth clips through the shared feature code, plus audio-only and face-only windows."""
    from avpenet.features import audio, windows
    from avpenet.features.track import FaceTrack
    from avpenet.synth.dataset import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=1, n_subjects=2, n_clips=3, render=0, workers=1, progress=False)
    rows = []
    for row in csv.DictReader((root / "labels.csv").open()):
        wave = audio.load_audio(root / row["audio"]) if row["audio"] else None
        track = FaceTrack.load_npz(root / row["visual"]) if row["visual"] else None
        rows.append(windows.model_inputs(wave, track, row["age_group"], served=True))
    audio_only = {name: a.copy() for name, a in rows[0].items()}
    audio_only[contract.FRAME_MASK.name][:] = 0.0
    face_only = {name: a.copy() for name, a in rows[0].items()}
    face_only[contract.AUDIO_PRESENT.name][:] = 0.0
    face_only[contract.AUDIO.name][:] = 0.0
    return [*rows, audio_only, face_only]  # one ensemble request per clip: its sound laid over its rows


@pytest.fixture(scope="module")
def torch_model():
    model = _served_model(contract.FUSION)
    # parity below needs every served trained part to be what the fusion's source exports: true for a full
    # export, and for a part that kept its version because the new source did not change it (a fine-tune
    # with that part frozen); the frontend has no trained parameters, so its unchanged version serves all
    from ensemble.onnx_export import export_part

    fusion_source = _served_source(contract.FUSION)
    for part in (p for p in contract.PARTS if p is not contract.AUDIO_FRONTEND):
        if _served_source(part) != fusion_source:
            folder = DEFAULT_REPOSITORY / part.name
            onnx_bytes = export_part(model.part(part.name), part)[0]
            served = folder / str(versions.latest(folder))
            assert not versions.changed_files(served, {"model.onnx": onnx_bytes}), part.name
    return model


def test_server_is_ready_with_every_model(triton_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    assert client.is_server_ready()
    for spec in contract.MODELS:
        assert client.is_model_ready(spec.name), spec.name
    newest = versions.latest(DEFAULT_REPOSITORY / contract.FUSION.name)
    assert client.is_model_ready(contract.FUSION.name, str(newest))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ensemble_matches_the_pytorch_model(
    triton_server: TritonServer, torch_model, clips, protocol: str
) -> None:
    from avpenet.features.windows import model_inputs_of

    module = grpcclient if protocol == "grpc" else httpclient
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    client = module.InferenceServerClient(url)
    weights = []
    for arrays in clips:  # the PyTorch model reads the same request as windows (model_inputs_of)
        n = len(arrays[contract.AGE_GROUP.name])
        windows = model_inputs_of(arrays)
        with torch.inference_mode():
            expected = torch_model(*(torch.from_numpy(windows[t.name]) for t in contract.MODEL_INPUTS))
        result = client.infer(contract.ENSEMBLE.name, infer_inputs(module, contract.ENSEMBLE, arrays))
        for t in contract.ENSEMBLE.outputs:
            got = result.as_numpy(t.name)
            assert got.shape == (n, *t.shape) and got.dtype == np.float32
            tolerance = SCORE_TOL if t == contract.SCORE else OUTPUT_TOL
            np.testing.assert_allclose(got, expected[t.name].numpy(), atol=tolerance, rtol=0, err_msg=t.name)
        score = result.as_numpy(contract.SCORE.name)
        assert ((score >= contract.SCORE_MIN) & (score <= contract.SCORE_MAX)).all()
        np.testing.assert_allclose(result.as_numpy(contract.CLASS_PROBS.name).sum(axis=1), 1.0, atol=1e-5)
        weights.append(result.as_numpy(contract.MODALITY_WEIGHTS.name))
    assert (weights[-2][:, 1] == 0.0).all() and (weights[-1][:, 0] == 0.0).all()  # absent modality: nothing


@pytest.mark.parametrize("part", contract.PARTS, ids=lambda p: p.name)
def test_each_part_alone_matches_its_pytorch_module(triton_server: TritonServer, torch_model, part) -> None:
    arrays = valid_inputs(part, batch=3, seed=11)
    expected = run_torch(torch_model.part(part.name), part, arrays)
    result = grpcclient.InferenceServerClient(triton_server.grpc_url).infer(
        part.name, infer_inputs(grpcclient, part, arrays)
    )
    for t in part.outputs:
        tolerance = LOG_MEL_TOL if t == contract.LOG_MEL else PART_TOL
        np.testing.assert_allclose(
            result.as_numpy(t.name), expected[t.name], atol=tolerance, rtol=0, err_msg=t.name
        )


async def _concurrent(url: str, requests: list[dict[str, np.ndarray]]) -> list:
    client = grpcaio.InferenceServerClient(url)
    try:
        calls = [
            client.infer(contract.ENSEMBLE.name, infer_inputs(grpcaio, contract.ENSEMBLE, r))
            for r in requests
        ]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await client.close()


def test_concurrent_requests_are_batched_dynamically(triton_server: TritonServer) -> None:
    before = read_metrics(triton_server.metrics_url)
    requests = [valid_inputs(contract.ENSEMBLE, batch=1, seed=i) for i in range(32)]
    results = asyncio.run(_concurrent(triton_server.grpc_url, requests))
    assert not [r for r in results if isinstance(r, Exception)]
    models = (contract.AUDIO_FRONTEND.name, contract.AUDIO_ENCODER.name, contract.FUSION.name)
    # A composing model records its statistics after the ensemble has answered: poll briefly for them.
    deadline = time.monotonic() + 10.0
    while True:
        delta = metrics_delta(before, read_metrics(triton_server.metrics_url))
        settled = all(delta.get(m, {}).get(COUNT, 0.0) >= 32 for m in models)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for model in models:
        items, executions = delta[model][COUNT], delta[model][EXEC_COUNT]
        # >= : a running gateway's watchdog adds its one-window probe inferences to the session Triton
        assert 32 <= items <= 40, model
        assert items / executions > 1.0, f"{model}: {items:.0f} windows in {executions:.0f} executions"


def _expect_error(url: str, arrays: dict[str, np.ndarray], *fragments: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        grpcclient.InferenceServerClient(url).infer(
            contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, arrays)
        )
    message = info.value.message()
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_tensors_get_readable_errors_and_the_server_keeps_serving(triton_server: TritonServer) -> None:
    url = triton_server.grpc_url
    short = valid_inputs(contract.ENSEMBLE, batch=1)
    short[contract.AUDIO.name] = short[contract.AUDIO.name][:, :1000].copy()
    _expect_error(url, short, contract.AUDIO.name, "samples laid over its rows")

    nan = valid_inputs(contract.ENSEMBLE, batch=2)
    nan[contract.VISUAL_FEATURES.name][1, 4, 7] = np.nan
    # visual_encoder, the first-scheduled entry step, defers its rejection (configs.STEP_ORDER): it answers
    # NaN tokens and fusion refuses them, so the message names the tokens, not visual_features.
    _expect_error(url, nan, "fusion", contract.VISUAL_TOKENS_T.name, "NaN")

    inf = valid_inputs(contract.ENSEMBLE, batch=1)
    inf[contract.AUDIO.name][0, 9] = np.inf
    _expect_error(url, inf, contract.AUDIO.name, "NaN or Inf")

    age = valid_inputs(contract.ENSEMBLE, batch=1)
    age[contract.AGE_GROUP.name][0, 0] = len(contract.AGE_GROUPS)
    _expect_error(url, age, contract.AGE_GROUP.name, "within")

    http = httpclient.InferenceServerClient(triton_server.http_url)
    with pytest.raises(InferenceServerException, match="NaN"):
        http.infer(contract.ENSEMBLE.name, infer_inputs(httpclient, contract.ENSEMBLE, nan))

    # One poisoned request inside a dynamic batch fails alone; its batch-mates are answered.
    requests = [valid_inputs(contract.ENSEMBLE, batch=1, seed=i) for i in range(12)]
    requests[5] = nan
    results = asyncio.run(_concurrent(url, requests))
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [5]
    assert grpcclient.InferenceServerClient(url).is_server_live()
    assert grpcclient.InferenceServerClient(url).is_model_ready(contract.ENSEMBLE.name)
