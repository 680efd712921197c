"""Helpers for the hung-stub fault tests: a model repository whose audio_frontend can be hung on purpose."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, versions

HUNG_MODEL = Path(__file__).with_name("hung_stub_model.py")


def hung_repository(root: Path) -> Path:
    """A copy of the model repository whose audio_frontend hangs on hung_stub_model.HANG_MARKER."""
    repo = root / "repo"
    shutil.copytree(DEFAULT_REPOSITORY, repo, ignore=shutil.ignore_patterns("__pycache__"))
    part = repo / contract.AUDIO_FRONTEND.name
    version = part / str(versions.latest(part))
    (version / "model.py").rename(version / "real_model.py")
    shutil.copy(HUNG_MODEL, version / "model.py")
    return repo


def hang_triton(target: str) -> threading.Thread:
    """Send the marker request straight to Triton; it never returns (its stub sleeps), so in a thread."""
    import tritonclient.grpc as grpcclient
    from hung_stub_model import HANG_MARKER

    from ensemble.client import infer_inputs
    from ensemble.probe import probe_inputs

    def send() -> None:
        arrays = probe_inputs()
        arrays[contract.AUDIO.name][0, 0] = HANG_MARKER
        client = grpcclient.InferenceServerClient(target)
        try:
            tensors = infer_inputs(grpcclient, contract.ENSEMBLE, arrays)
            client.infer(contract.ENSEMBLE.name, tensors, client_timeout=120)
        except Exception:  # noqa: BLE001 (expected: Triton is killed under it)
            pass
        finally:
            client.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread
