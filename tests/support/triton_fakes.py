"""A stand-in for tritonclient's InferResult, for unit tests of the clients (no server)."""

from __future__ import annotations

import numpy as np

from avpenet import contract


class FakeResult:
    """`rows` windows of zeros for every ensemble output; model version "1"."""

    def __init__(self, rows: int = 1) -> None:
        self.rows = rows

    def as_numpy(self, name: str) -> np.ndarray:
        spec = next(s for s in contract.ENSEMBLE.outputs if s.name == name)
        return np.zeros((self.rows, *spec.shape), spec.numpy_dtype)

    def get_response(self):
        return type("Response", (), {"model_version": "1"})()
