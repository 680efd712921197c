"""A stand-in for tritonclient's InferResult, for unit tests of the clients (no server)."""

from __future__ import annotations

import numpy as np

from avpenet import contract


class FakeResult:
    """`rows` windows of zeros for every ensemble output but those `missing` (None, as tritonclient answers
    for an output the version lacks); model version "1"."""

    def __init__(self, rows: int = 1, missing: tuple[str, ...] = ()) -> None:
        self.rows = rows
        self.missing = missing

    def as_numpy(self, name: str) -> np.ndarray | None:
        if name in self.missing:
            return None
        spec = next(s for s in contract.ENSEMBLE.outputs if s.name == name)
        return np.zeros((self.rows, *spec.shape), spec.numpy_dtype)

    def get_response(self):
        return type("Response", (), {"model_version": "1"})()
