"""Which tritonserver runs: the nvidia-pytriton wheel's (default), or an installed Triton.

The wheel carries the Python backend only, enough for the CPU configs. The GPU configs
(`--model-config-name=gpu`) need the onnxruntime backend and CUDA of a full Triton install, such as the NGC
`tritonserver:24.10-py3` image's `/opt/tritonserver`: `AVPENET_TRITON_HOME=/opt/tritonserver` makes every
launcher here (`avpenet triton`, `avpenet serve`, `avpenet bench`, the tests) start that install's
`bin/tritonserver` with its own `backends/` directory, and leaves the wheel's libraries off its library path.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

HOME_ENV = "AVPENET_TRITON_HOME"


class TritonInstallError(RuntimeError):
    """The tritonserver to run is missing a file it needs; the message says which and how to fix it."""


def _pytriton_root() -> Path:
    import pytriton  # imported here so `avpenet --help` stays fast

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def installed_home() -> Path | None:
    """The Triton install named by AVPENET_TRITON_HOME, or None for the wheel's."""
    home = os.environ.get(HOME_ENV)
    if not home:
        return None
    root = Path(home)
    missing = [p for p in (root / "bin" / "tritonserver", root / "backends") if not p.exists()]
    if missing:
        raise TritonInstallError(
            f"{HOME_ENV}={home} is not a Triton install: no {', '.join(map(str, missing))} "
            "(the NGC image's is /opt/tritonserver; unset it to run the nvidia-pytriton wheel's)"
        )
    return root


def tritonserver_binary() -> Path:
    return (installed_home() or _pytriton_root()) / "bin" / "tritonserver"


def wheel_python_backend() -> list[Path]:
    """The wheel's Python backend library, its utilities and the stub built for this interpreter."""
    root = _pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]


def backend_directory(workdir: Path) -> Path:
    """The `--backend-directory`: an install's own `backends/`, or for the wheel `<workdir>/python/` made of
    links to its Python backend and the stub for this interpreter (ensemble/README.md).

    Triton 2.51 ignores a stub placed inside a model folder, so the stub must sit next to the backend library.
    """
    home = installed_home()
    if home is not None:
        return home / "backends"
    check_stub_numpy()
    python_dir = workdir / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in wheel_python_backend():
        if not source.exists():
            raise TritonInstallError(f"nvidia-pytriton is missing {source}; reinstall it with `make setup`")
        link = python_dir / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return workdir


def _numpy_version() -> str:
    return importlib.metadata.version("numpy")


def check_stub_numpy() -> None:
    """Refuse NumPy 2 under the wheel's Python-backend stub: every answer would fail, and cryptically.

    The stub is built against NumPy 1 and imports this interpreter's packages (it runs in this venv). Handed
    a NumPy 2 array as an output, it sizes it 0 bytes, so every ensemble call fails with "input byte size
    mismatch for input 'log_mel' for model 'audio_encoder'. Expected 153600, got 0" (seen with NumPy 2.4 on
    the 3.11 stub and 2.5 on the 3.12 one). requirements/constraints.txt pins NumPy 1.26; this catches a venv
    that something upgraded since.
    """
    version = _numpy_version()
    if int(version.split(".")[0]) >= 2:
        raise TritonInstallError(
            f"NumPy {version} is installed in {sys.prefix}, but the nvidia-pytriton wheel's Python-backend "
            "stub reads NumPy 2 arrays as 0 bytes, so every scoring call would fail ('input byte size "
            "mismatch ... got 0'). Install the pinned NumPy: pip install -c requirements/constraints.txt "
            "'numpy<2'"
        )


def library_dirs() -> list[str]:
    """Library folders the wheel's binary needs on LD_LIBRARY_PATH; none for an install (it has its own:
    the wheel's copies of shared libraries could shadow the install's)."""
    if installed_home() is not None:
        return []
    return [str(_pytriton_root().parent.parent / "nvidia_pytriton.libs")]
