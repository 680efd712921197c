"""Build the Triton model repository from a checkpoint and launch the real tritonserver on it."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"
BACKEND_SOURCE = Path(__file__).resolve().parent / "backend" / "model.py"
