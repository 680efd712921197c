"""AVPENET_TRITON_HOME: an installed Triton (the NGC image's /opt/tritonserver, which the GPU configs need)
instead of the nvidia-pytriton wheel's.

There is no NGC image here, so an install is laid out from the wheel's own files (bin/tritonserver,
backends/python/) and the real server must start from it: its binary, its backends/ as given, none of the
wheel's libraries on its library path, and the GPU-friendly defaults the wheel's CPU-only launch turns off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, triton_install
from ensemble.client import infer_inputs
from ensemble.onnx_export import valid_inputs
from ensemble.server import TritonServer, TritonStartError, stub_environment

WHEEL_LIBS = "nvidia_pytriton.libs"


def _install_from_wheel(home: Path) -> Path:
    """/opt/tritonserver's layout (bin/, backends/python/) made of links to the wheel's files."""
    wheel = triton_install._pytriton_root()
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "tritonserver").symlink_to(wheel / "bin" / "tritonserver")
    python = home / "backends" / "python"
    python.mkdir(parents=True)
    for source in triton_install.wheel_python_backend():
        (python / source.name).symlink_to(source)
    return home


def test_unset_runs_the_wheels_binary_and_libraries(monkeypatch):
    monkeypatch.delenv(triton_install.HOME_ENV, raising=False)
    assert triton_install.tritonserver_binary().is_relative_to(triton_install._pytriton_root())
    assert WHEEL_LIBS in stub_environment({})["LD_LIBRARY_PATH"]


def test_a_folder_that_is_not_an_install_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(triton_install.HOME_ENV, str(tmp_path / "nope"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(TritonStartError, match=r"TRITON_HOME=.*nope is not a Triton install: no .*bin"):
        TritonServer(repo=DEFAULT_REPOSITORY).start()
    assert list(scratch.iterdir()) == []  # its work folder went with the refusal


@pytest.mark.integration
def test_an_install_serves_from_its_own_binary_and_backends(tmp_path, monkeypatch):
    home = _install_from_wheel(tmp_path / "tritonserver")
    monkeypatch.setenv(triton_install.HOME_ENV, str(home))
    assert WHEEL_LIBS not in stub_environment({})["LD_LIBRARY_PATH"]
    arrays = valid_inputs(contract.ENSEMBLE, batch=2, seed=3)
    with TritonServer(repo=DEFAULT_REPOSITORY) as server:
        command = server.command()
        assert command[0] == str(home / "bin" / "tritonserver")
        assert f"--backend-directory={home / 'backends'}" in command
        assert "--allow-gpu-metrics=false" not in command
        client = grpcclient.InferenceServerClient(server.grpc_url)
        reply = client.infer(contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, arrays))
        client.close()
    score = reply.as_numpy(contract.SCORE.name)
    assert score.shape == (2, 1) and np.all((score >= 0) & (score <= 10))
    assert (home / "backends" / "python" / "libtriton_python.so").is_symlink()  # stop() left it alone


def test_the_wheels_stub_is_refused_numpy_2_with_the_fix(monkeypatch):
    """The wheel's stub sizes NumPy 2 outputs as 0 bytes (every call fails): refused before launch."""
    monkeypatch.delenv(triton_install.HOME_ENV, raising=False)
    monkeypatch.setattr(triton_install, "_numpy_version", lambda: "2.4.6")
    with pytest.raises(TritonStartError, match=r"NumPy 2\.4\.6 .*numpy<2"):
        TritonServer().start()
    monkeypatch.setattr(triton_install, "_numpy_version", lambda: "1.26.4")
    triton_install.check_stub_numpy()  # the pinned version passes


def test_an_install_brings_its_own_stub_and_is_not_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(triton_install.HOME_ENV, str(_install_from_wheel(tmp_path / "home")))
    monkeypatch.setattr(triton_install, "_numpy_version", lambda: "2.4.6")
    assert triton_install.backend_directory(tmp_path / "work") == tmp_path / "home" / "backends"
