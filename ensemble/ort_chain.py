"""The four served ONNX graphs chained in one process with onnxruntime, exactly as the ensemble chains them.

Used where Triton is not wanted but its graphs are: the benchmark's one-process ONNX Runtime peer,
`avpenet evaluate --repository` (the accuracy of what a repository serves, fp32 or int8) and the
calibration of `avpenet quantize`. Each part runs the graph its config.pbtxt selects (`onnx_file`), from its
newest version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from avpenet import contract, cpus
from ensemble.versions import latest, served_part

DEFAULT_ONNX_FILE = "model.onnx"


def configured_onnx_file(model_dir: Path) -> str:
    """The graph file a part's config.pbtxt serves: its `onnx_file` parameter (model.onnx by default)."""
    from ensemble.configs import parse

    path = Path(model_dir) / "config.pbtxt"
    if not path.exists():
        return DEFAULT_ONNX_FILE
    parameter = parse(path).parameters.get("onnx_file")
    return parameter.string_value if parameter is not None and parameter.string_value else DEFAULT_ONNX_FILE


def served_graph(repo: Path, part: str) -> Path:
    """Path of the ONNX graph Triton serves for `part`: newest version, configured file."""
    model_dir = Path(repo) / part
    version = latest(model_dir)
    if version is None:
        raise FileNotFoundError(f"{model_dir}: no version folder")
    return model_dir / str(version) / configured_onnx_file(model_dir)


class OrtChain:
    """audio_frontend -> audio_encoder, visual_encoder, fusion: the ensemble's outputs for N windows."""

    def __init__(
        self,
        repo: str | os.PathLike | None = None,
        threads: int | None = None,
        graphs: Mapping[str, str] | None = None,
    ) -> None:
        """`graphs`: {part: file name} to run instead of what the configs select (e.g. the fp32 graphs)."""
        import onnxruntime as ort

        from ensemble import DEFAULT_REPOSITORY

        self.repo = Path(repo) if repo is not None else DEFAULT_REPOSITORY
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpus.available()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # As the Triton backend: spinning intra-op pools of concurrent runs burn the cores they wait for.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.graphs = {spec.name: served_graph(self.repo, spec.name) for spec in contract.PARTS}
        for part, name in (graphs or {}).items():
            self.graphs[part] = self.graphs[part].with_name(name)
        self.parts = [
            (
                spec,
                ort.InferenceSession(
                    str(self.graphs[spec.name]), options, providers=["CPUExecutionProvider"]
                ),
            )
            for spec in (served_part(self.repo, p) for p in contract.PARTS)  # a rolled-back fusion lacks one
        ]

    def all_tensors(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ensemble inputs plus every part's outputs (the internal tensors too).

        `inputs` is an ensemble request (AUDIO rows + WINDOW_GAIN) or the PyTorch model's windows
        (contract.MODEL_INPUTS, e.g. from evaluation). Windows are already level-normalised 3 s rows, i.e.
        one-window clips of gain 1 stacked as Triton stacks requests, which the frontend reads apart."""
        values = dict(inputs)
        if contract.AUDIO.name not in values:
            values |= contract.one_window_requests(values)
        for spec, session in self.parts:
            names = [t.name for t in spec.outputs]
            out = session.run(names, {t.name: values[t.name] for t in spec.inputs})
            values.update({t.name: v for t, v in zip(spec.outputs, out, strict=True)})
        return values

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.all_tensors(inputs)
        return {spec.name: values[spec.name] for spec in contract.ENSEMBLE.outputs if spec.name in values}
