"""A retrained part is exported as version N+1 and swapped in under traffic with zero failed requests."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from support.fusion_bump import fusion_bump

from avpenet import contract
from avpenet.features.windows import model_inputs_of
from ensemble import export
from ensemble.client import infer_inputs
from ensemble.onnx_export import valid_inputs
from ensemble.server import TritonServer

pytestmark = pytest.mark.integration
SWAP_TIMEOUT_S = 60.0


def _request(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    return infer_inputs(grpcclient, contract.ENSEMBLE, arrays)


class Traffic:
    """Clients calling the ensemble in a loop; records every score and every failure."""

    def __init__(self, url: str, arrays: dict[str, np.ndarray], clients: int = 2) -> None:
        self.url, self.arrays = url, arrays
        self.scores: list[np.ndarray] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self.clients = clients
        self.latest: dict[int, np.ndarray] = {}  # each client's last answer
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]

    def _loop(self) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        inputs = _request(self.arrays)
        while not self._stop.is_set():
            try:
                result = client.infer(contract.ENSEMBLE.name, inputs, client_timeout=10)
                self.scores.append(result.as_numpy(contract.SCORE.name).copy())
                self.latest[threading.get_ident()] = self.scores[-1]
            except Exception as exc:  # every failure is the test's business, whatever its type
                self.failures.append(repr(exc))
        client.close()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_new_fusion_version_swaps_in_under_traffic_without_failures(tmp_path: Path) -> None:
    warnings.filterwarnings("ignore")
    bump = fusion_bump(tmp_path)  # a visibly different score: we can tell which version answered
    repo, old_version, old_model, new_model = bump.repo, bump.old_version, bump.old_model, bump.new_model
    arrays = valid_inputs(contract.ENSEMBLE, batch=2, seed=5)
    windows = model_inputs_of(arrays)  # the same request as the PyTorch model reads it
    with torch.inference_mode():
        as_tensors = [torch.from_numpy(windows[t.name]) for t in contract.MODEL_INPUTS]
        old_score = old_model(*as_tensors)[contract.SCORE.name].numpy()
        new_score = new_model(*as_tensors)[contract.SCORE.name].numpy()
    assert np.abs(old_score - new_score).min() > 1e-2

    with (
        TritonServer(repo=repo, model_control="explicit") as server,
        Traffic(server.grpc_url, arrays) as traffic,
    ):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        time.sleep(0.5)
        report = export.export_repository(new_model, repo, {"kind": "in-memory", "note": "test"}, keep=3)
        assert (
            report[contract.FUSION.name]["created"]
            and report[contract.FUSION.name]["version"] == old_version + 1
        )
        assert not any(report[p.name]["created"] for p in contract.PARTS if p != contract.FUSION)
        client.load_model(contract.FUSION.name)
        deadline = time.monotonic() + SWAP_TIMEOUT_S
        while not client.is_model_ready(contract.FUSION.name, str(old_version + 1)):
            assert time.monotonic() < deadline, "version N+1 never became ready"
            time.sleep(0.05)
        swapped_at = len(traffic.scores)
        deadline = time.monotonic() + SWAP_TIMEOUT_S

        def new_answers_only() -> bool:  # EVERY client's last answer came from version N+1
            last = list(traffic.latest.values())
            return len(last) == traffic.clients and all(np.allclose(s, new_score, atol=1e-4) for s in last)

        # Triton reports version N not ready when its unload starts, and it still finishes what it holds
        # (one client's request may come back from N after the other's came from N+1): wait for the unload
        # (latest {num_versions: 1}) and for an N+1 answer to each client; what they send after is N+1's
        while client.is_model_ready(contract.FUSION.name, str(old_version)) or not new_answers_only():
            assert time.monotonic() < deadline, "version N stayed loaded, or N+1 never answered the traffic"
            time.sleep(0.05)
        assert client.is_model_ready(contract.ENSEMBLE.name)

    assert traffic.failures == []
    assert swapped_at >= 2 and len(traffic.scores) > swapped_at + 2
    np.testing.assert_allclose(traffic.scores[0], old_score, atol=1e-4)
    np.testing.assert_allclose(traffic.scores[-1], new_score, atol=1e-4)
    for score in traffic.scores:  # every answer came whole from one version or the other
        assert np.allclose(score, old_score, atol=1e-4) or np.allclose(score, new_score, atol=1e-4)
