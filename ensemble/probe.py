"""A real, tiny inference through the whole ensemble: the health check that notices a hung or wedged model.

Triton's own `/v2/health/ready` and `is_model_ready` only say that models are loaded: a Python-backend stub
stuck in `execute` (or a model that errors on every request) still reports ready. One zero window through
every step (audio_frontend, audio_encoder, visual_encoder, fusion) with a short deadline is what tells the
truth. The gateway's watchdog (preprocess_service/watchdog.py) and the local supervisor (LocalStack.supervise,
`avpenet serve`) both send exactly these inputs.
"""

from __future__ import annotations

import threading

import numpy as np

from avpenet import contract

PROBE_TIMEOUT_S = 3.0  # one zero window takes ~10-50 ms on a busy 2-core box; a hang takes forever
PROBE_REQUEST_ID = "avpenet-probe"  # visible in Triton's traces, so probes are not mistaken for patients


def probe_inputs() -> dict[str, np.ndarray]:
    """One all-zero window (silence, no face, age group "unknown"): valid input for every step."""
    arrays = contract.zero_inputs(contract.ENSEMBLE, 1)
    arrays[contract.AGE_GROUP.name][:] = contract.UNKNOWN_AGE
    return arrays


def check_outputs(outputs: dict[str, np.ndarray]) -> None:
    """Raise RuntimeError unless every output is present and finite (a wedged model may answer garbage)."""
    for spec in contract.ENSEMBLE.outputs:
        value = outputs.get(spec.name)
        if value is None and spec not in contract.REQUIRED_OUTPUTS:
            continue  # an older fusion's ensemble has no such output (contract.ADULT_PROBABILITY)
        if value is None or not np.all(np.isfinite(value)):
            raise RuntimeError(f"probe output {spec.name} missing or not finite")


def probe_call(client_module, timeout_s: float) -> dict:
    """The probe's inference arguments for tritonclient's `client_module` (grpc or grpc.aio), beside the model
    name: one for both probes, so neither sends a gRPC deadline that would cancel it (ensemble/client.py)."""
    from ensemble.client import backstop_s, infer_inputs

    return {
        "inputs": infer_inputs(client_module, contract.ENSEMBLE, probe_inputs()),
        "request_id": PROBE_REQUEST_ID,
        "client_timeout": backstop_s(timeout_s),
    }


def probe(grpc_url: str, *, timeout_s: float = PROBE_TIMEOUT_S, model: str = contract.ENSEMBLE.name) -> None:
    """One probe inference over gRPC (blocking); raises on error, timeout or non-finite outputs.

    A probe not answered in time is not cancelled (ensemble/client.py, CANCEL_BACKSTOP_S): a daemon thread
    closes its channel once the call ends, by Triton's answer or by the backstop deadline."""
    import tritonclient.grpc as grpcclient

    answered = threading.Event()
    answer: list = []
    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        client.async_infer(
            model,
            callback=lambda result, error: (answer.extend((result, error)), answered.set()),
            **probe_call(grpcclient, timeout_s),
        )
    except Exception:  # not sent: nothing to cancel
        client.close()
        raise
    if not answered.wait(timeout_s):
        threading.Thread(target=lambda: (answered.wait(), client.close()), daemon=True).start()
        raise TimeoutError(f"probe inference not answered within {timeout_s:.1f} s")
    client.close()
    result, error = answer
    if error is not None:
        raise error
    check_outputs({s.name: result.as_numpy(s.name) for s in contract.ENSEMBLE.outputs})  # absent: None
