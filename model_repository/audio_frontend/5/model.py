"""Triton Python-backend model that runs the `model.onnx` beside it with onnxruntime.

The tritonserver here has only the Python backend, so every part of the AVPENet ensemble is this one file,
copied into each version folder next to its ONNX graph. Tensor names and dtypes come from the model's
config.pbtxt (written from `avpenet.contract`), so this file names no tensor. Every request of a dynamic batch
is validated on its own: a bad one (NaN, out-of-range value) gets its own error response and the others are
still run together in one ONNX call.

An ensemble's FIRST-scheduled entry step must not answer an error: Triton 2.51 deadlocks when an error reaches
the ensemble while its gRPC request is still scheduling the entry steps (see ensemble/configs.py STEP_ORDER).
A part configured with `defer_rejection` answers a bad request with NaN outputs instead; the next part, which
runs only after scheduling is over, rejects them with INVALID_ARGUMENT. The first reason goes to Triton's log.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# Config parameters (string values) this backend reads:
#   onnx_file          file name in the version folder (default model.onnx)
#   intra_op_threads   ORT threads of this instance; the whole box's cores are shared by all stubs
#   value_ranges       JSON {input: [low, high]}: inclusive bounds checked per request (e.g. an index input)
#   defer_rejection    "true": a bad request gets NaN outputs, not an error (the first entry step; see above)
#   clip_rows          JSON {input, window, hop}: that input is one clip laid over its N rows, L = ceil(((N-1)
#                      * hop + window) / N) samples each: the graph reads N from L
DEFAULT_THREADS = 2


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(version_dir, _parameter(config, "onnx_file", "model.onnx"))

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_threads", str(DEFAULT_THREADS)))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning pools in several stub processes on a 2-core box made the chain 3-4x slower (measured).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

        self.inputs = [
            (spec["name"], pb_utils.triton_string_to_numpy(spec["data_type"])) for spec in config["input"]
        ]
        self.outputs = [
            (spec["name"], pb_utils.triton_string_to_numpy(spec["data_type"])) for spec in config["output"]
        ]
        self.output_dims = {spec["name"]: [int(d) for d in spec["dims"]] for spec in config["output"]}
        self.defer_rejection = _parameter(config, "defer_rejection", "false").lower() == "true"
        self.clip_rows = json.loads(_parameter(config, "clip_rows", "{}"))
        self.value_ranges = {
            name: (float(low), float(high))
            for name, (low, high) in json.loads(_parameter(config, "value_ranges", "{}")).items()
        }
        onnx_inputs = {i.name for i in self.session.get_inputs()}
        onnx_outputs = {o.name for o in self.session.get_outputs()}
        missing = {n for n, _ in self.inputs} - onnx_inputs | {n for n, _ in self.outputs} - onnx_outputs
        if missing:
            raise pb_utils.TritonModelException(
                f"{onnx_path} lacks tensors the config declares: {sorted(missing)}"
            )
        self.model_name = args["model_name"]

    def _read(self, request) -> dict[str, np.ndarray]:
        """One request's inputs; raises ValueError with a caller-readable reason."""
        arrays = {}
        for name, dtype in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input {name!r} is missing")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                array = array.astype(dtype)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise ValueError(f"input {name!r} holds NaN or Inf values")
            bounds = self.value_ranges.get(name)
            if bounds is not None and array.size and (array.min() < bounds[0] or array.max() > bounds[1]):
                raise ValueError(f"input {name!r} must lie within [{bounds[0]:g}, {bounds[1]:g}]")
            arrays[name] = array
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"inputs disagree on the batch size: {sorted(rows)}")
        if self.clip_rows:
            clip = arrays[self.clip_rows["input"]]
            n = clip.shape[0]
            row = -(-((n - 1) * self.clip_rows["hop"] + self.clip_rows["window"]) // max(n, 1))
            if clip.ndim != 2 or clip.shape[1] != row:
                raise ValueError(
                    f"input {self.clip_rows['input']!r} of {n} windows must be [{n}, {row}] (the clip's "
                    f"samples laid over its rows); got shape {list(clip.shape)}"
                )
        return arrays

    def _reject(self, request, reason: str):
        """An error response, or with defer_rejection NaN outputs the next part refuses (module doc)."""
        if not self.defer_rejection:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.model_name}: {reason}", pb_utils.TritonError.INVALID_ARG)
            )
        pb_utils.Logger.log_warn(f"{self.model_name}: {reason}; answered with NaN outputs (deferred)")
        tensor = pb_utils.get_input_tensor_by_name(request, self.inputs[0][0])
        rows = int(tensor.as_numpy().shape[0]) if tensor is not None else 1
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.full([rows, *self.output_dims[name]], np.nan, dtype=dtype))
                for name, dtype in self.outputs
            ]
        )

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        good: list[tuple[int, dict[str, np.ndarray]]] = []
        for index, request in enumerate(requests):
            try:
                good.append((index, self._read(request)))
            except ValueError as exc:
                responses[index] = self._reject(request, str(exc))
        # One graph call per shape: Triton batches only requests of one shape, but a stub must not rely on it.
        groups: dict[tuple, list] = {}
        for item in good:
            groups.setdefault(tuple(a.shape[1:] for a in item[1].values()), []).append(item)
        for group in groups.values():
            self._run(requests, group, responses)
        return responses

    def _run(self, requests: list, good: list, responses: list) -> None:
        """One graph call over the requests in `good` (their rows concatenated); fills their responses."""
        feeds = {
            name: np.concatenate([arrays[name] for _, arrays in good]) if len(good) > 1 else good[0][1][name]
            for name, _ in self.inputs
        }
        try:
            results = self.session.run([name for name, _ in self.outputs], feeds)
        except Exception as exc:  # an ORT failure must answer the callers, not kill the stub
            error = pb_utils.TritonError(
                f"{self.model_name}: inference failed: {exc}", pb_utils.TritonError.INTERNAL
            )
            for index, _ in good:
                responses[index] = (
                    self._reject(requests[index], f"inference failed: {exc}")
                    if self.defer_rejection
                    else pb_utils.InferenceResponse(error=error)
                )
            return
        start = 0
        for index, arrays in good:
            stop = start + next(iter(arrays.values())).shape[0]
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start:stop], dtype=dtype))
                for (name, dtype), result in zip(self.outputs, results, strict=True)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop

    def finalize(self) -> None:
        self.session = None
