"""The pod config set (`configs/pod.pbtxt`, `tritonserver --model-config-name=pod`, the CPU overlay's): the
default CPU configs but each part's ONNX Runtime threads, sized to the pod's CPUs, whatever the default set
says (ONNX Runtime's own default, 0, is one thread per physical core of the node: a 4-CPU pod on a 64-core
node ran four 64-thread pools)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, configs
from ensemble.batching import load_plan
from ensemble.client import infer_inputs
from ensemble.onnx_export import valid_inputs
from ensemble.server import TritonServer


@pytest.mark.parametrize("model", contract.MODELS, ids=lambda m: m.name)
def test_the_pod_set_is_the_cpu_set_with_the_pods_threads(model: contract.ModelSpec) -> None:
    folder = DEFAULT_REPOSITORY / model.name
    default, pod = configs.parse(folder / "config.pbtxt"), configs.parse(folder / "configs" / "pod.pbtxt")
    if model in contract.PARTS:
        assert default.parameters["intra_op_threads"].string_value == str(load_plan().intra_op_threads)
        assert pod.parameters["intra_op_threads"].string_value == str(configs.pod_threads()) == "1"
        pod.parameters["intra_op_threads"].string_value = default.parameters["intra_op_threads"].string_value
    assert pod == default


def _scores(url: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    try:
        result = client.infer(contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, arrays))
        return result.as_numpy(contract.SCORE.name)
    finally:
        client.close()


@pytest.mark.integration
def test_tritonserver_loads_the_pod_set_and_scores_as_the_default_set(triton_server: TritonServer) -> None:
    arrays = valid_inputs(contract.ENSEMBLE, batch=3, seed=11)
    with TritonServer(repo=DEFAULT_REPOSITORY, model_config_name=configs.POD_CONFIG_NAME) as pod:
        client = grpcclient.InferenceServerClient(pod.grpc_url)
        try:
            for part in contract.PARTS:
                loaded = client.get_model_config(part.name, as_json=True)["config"]["parameters"]
                assert loaded["intra_op_threads"]["string_value"] == str(configs.pod_threads()), part.name
        finally:
            client.close()
        got = _scores(pod.grpc_url, arrays)
    np.testing.assert_allclose(got, _scores(triton_server.grpc_url, arrays), atol=1e-4)
