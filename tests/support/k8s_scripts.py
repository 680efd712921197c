"""The scripts under k8s/ (render, generate, validate) loaded as modules: k8s/ is not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

K8S = Path(__file__).resolve().parents[2] / "k8s"


def load(name: str) -> ModuleType:
    """k8s/<name>.py as the module `k8s_<name>` (registered, so dataclasses and pickling can find it)."""
    spec = importlib.util.spec_from_file_location(f"k8s_{name}", K8S / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
