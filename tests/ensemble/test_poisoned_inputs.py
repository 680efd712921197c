"""Poisoned tensors sent straight to the real Triton ensemble over gRPC (no gateway) are refused, and never
wedge the server.

Triton 2.51 deadlocks when a composing model answers an error while the ensemble is still scheduling its entry
steps (ensemble/configs.py STEP_ORDER): a NaN waveform wedged the server after a few requests, every later
request timing out. Each kind of poison is sent many times, at several batch sizes, alternating with valid
requests; every answer must come back, as INVALID_ARGUMENT, within a bound far below the client deadline.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from avpenet import contract
from ensemble import configs
from ensemble.client import infer_inputs

ROUNDS = 12
DEADLINE_S = 20.0  # a wedged server shows as DEADLINE_EXCEEDED; a healthy one answers in milliseconds
ANSWER_BOUND_S = 10.0


def valid(n: int) -> dict[str, np.ndarray]:
    x = contract.zero_inputs(contract.ENSEMBLE, n)
    for name in (contract.FRAME_MASK.name, contract.AUDIO_PRESENT.name, contract.AGE_GROUP.name):
        x[name][:] = 1
    return x


def poison(kind: str, n: int) -> dict[str, np.ndarray]:
    x = valid(n)
    tensor, value = {
        "nan_waveform": (contract.AUDIO.name, np.nan),
        "inf_waveform": (contract.AUDIO.name, np.inf),
        "nan_visual_features": (contract.VISUAL_FEATURES.name, np.nan),
        "inf_frame_mask": (contract.FRAME_MASK.name, -np.inf),
        "age_group_out_of_range": (contract.AGE_GROUP.name, 7),
    }[kind]
    x[tensor][:] = value
    return x


def infer(client, arrays):
    return client.infer(
        contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, arrays), client_timeout=DEADLINE_S
    )


def test_the_fast_rejecting_part_is_scheduled_last_and_the_first_entry_step_defers():
    ensemble_inputs = {t.name for t in contract.ENSEMBLE.inputs}
    entry = [p for p in configs.STEP_ORDER if {t.name for t in p.inputs} <= ensemble_inputs]
    assert entry[-1] is contract.AUDIO_FRONTEND and len(entry) == 2
    first = configs.part_config(entry[0], configs.load_plan())
    assert first.parameters["defer_rejection"].string_value == "true"
    assert "defer_rejection" not in configs.part_config(entry[-1], configs.load_plan()).parameters


@pytest.mark.integration  # starts a real server
@pytest.mark.parametrize(
    "kind",
    ["nan_waveform", "inf_waveform", "nan_visual_features", "inf_frame_mask", "age_group_out_of_range"],
)
def test_poisoned_requests_are_refused_and_never_wedge_triton(triton_server, kind):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        for i in range(ROUNDS):
            started = time.perf_counter()
            with pytest.raises(InferenceServerException) as refused:
                infer(client, poison(kind, (1, 2, 7)[i % 3]))
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value.message()
            assert time.perf_counter() - started < ANSWER_BOUND_S
            result = infer(client, valid(2))  # the next valid request is scored
            assert np.isfinite(result.as_numpy(contract.SCORE.name)).all()
    finally:
        client.close()
