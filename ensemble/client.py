"""Client-side Triton helpers shared by the gateway, the batching tuner, the benchmark and the tests.

`infer_inputs` builds request tensors from the contract, `channel_args` the gRPC channel's settings;
`read_metrics` is the one reader of Triton's Prometheus endpoint (counters per model, summed over versions).
Kept apart from the launcher (server.py) so a client never imports the code that starts a tritonserver.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

import numpy as np

from avpenet import contract

# The Triton counters the tuner and the benchmark read: items, executions (their ratio is the average batch)
# and where the time went.
TRITON_METRICS = (
    "nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success",
    "nv_inference_compute_infer_duration_us", "nv_inference_queue_duration_us",
)  # fmt: skip
COUNT, EXEC_COUNT, REQUEST_SUCCESS = TRITON_METRICS[:3]

Metrics = dict[str, dict[str, float]]


def infer_inputs(client_module, spec, arrays: Mapping[str, np.ndarray]) -> list:
    """tritonclient InferInputs (`client_module`: grpc, grpc.aio or http) for `spec`'s inputs."""
    tensors = []
    for t in spec.inputs:
        array = np.ascontiguousarray(arrays[t.name], dtype=t.numpy_dtype)
        tensor = client_module.InferInput(t.name, list(array.shape), t.dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's defaults (message sizes, keepalive) plus a short reconnect backoff.

    gRPC's default backoff grows to 120 s: after Triton restarts (a crash, the supervisor) the gateway would
    wait up to minutes for its next connection attempt; capped at 2 s it is back within seconds.
    """
    from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def parse_metrics(text: str) -> Metrics:
    """{model: {metric: value}} of the TRITON_METRICS samples in an exposition, summed over versions."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")  # the parser names counter samples *_total
            if name in TRITON_METRICS and "model" in sample.labels:
                row = out.setdefault(sample.labels["model"], {})
                row[name] = row.get(name, 0.0) + float(sample.value)
    return out


def read_metrics(url: str | None) -> Metrics:
    """`parse_metrics` of Triton's metrics endpoint (full URL); {} without one."""
    if not url:
        return {}
    with urllib.request.urlopen(url, timeout=5) as response:
        return parse_metrics(response.read().decode())


def metrics_delta(start: Metrics, end: Metrics) -> Metrics:
    """end - start per model and metric (a model first seen at `end` counts from zero)."""
    return {
        model: {k: v - start.get(model, {}).get(k, 0.0) for k, v in metrics.items()}
        for model, metrics in end.items()
    }


def average_batch(delta: Metrics, model: str) -> float:
    """Items per execution of `model` in a `metrics_delta`: the batch Triton's dynamic batcher formed."""
    row = delta.get(model, {})
    executions = row.get(EXEC_COUNT, 0.0)
    return row.get(COUNT, 0.0) / executions if executions else 0.0


# Triton 2.51's gRPC frontend may crash (SIGSEGV in its cancellation handler) or wedge when a client cancels
# an inference while the server is completing it (upstream triton-inference-server/server#7368, one race
# fixed in 2.53, a similar one reported later in #8034); nvidia-pytriton 0.7 and NGC 24.10 ship 2.51. A gRPC
# deadline is such a cancellation, and so is closing a channel with calls on it. So our clients never cancel
# an inference on a working server: they stop *waiting* at their deadline and let the call end by Triton's
# answer (the parts have no queue timeout: ensemble/configs.py); the gRPC deadline (`backstop_s`) lies past
# any answer a working server can give and fires only on a hung one (which the watchdog and the supervisor
# restart anyway).
CANCEL_BACKSTOP_S = 30.0


def backstop_s(remaining_s: float) -> float:
    """The gRPC deadline of a call the caller waits `remaining_s` for: that wait once per part it queues in
    (every part, one after another, on a loaded server), then CANCEL_BACKSTOP_S more."""
    return len(contract.PARTS) * remaining_s + CANCEL_BACKSTOP_S
