"""The CPUs a process may use, not the cores it sees: PyTorch's pool is capped to them (avpenet.cpus)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from avpenet import cpus

needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to restrict to 1")


def _python(code: str, env: dict[str, str] | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's own default, not 1
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **(env or {})}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@needs_two
def test_available_reads_the_affinity_mask():
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from avpenet import cpus; "
    assert _python(code + "print(cpus.available())") == "1"


def test_importing_the_model_caps_torch_to_the_cpus_granted():
    """joblib's CPU count reads a container's quota; LOKY_MAX_CPU_COUNT is its stand-in for one here. The
    pool is set to 2 first, as torch's default is on a 2-core box (its default counts physical cores, so a
    2-vCPU machine with SMT starts at 1): without the cap it keeps 2."""
    code = "import torch; torch.set_num_threads(2); import avpenet.model; print(torch.get_num_threads())"
    assert _python(code, {"LOKY_MAX_CPU_COUNT": "1"}) == "1"


def test_a_lower_count_chosen_on_purpose_stays(monkeypatch):
    import torch

    kept = torch.get_num_threads()
    monkeypatch.setattr(cpus, "available", lambda: 4)
    try:
        torch.set_num_threads(1)
        assert cpus.cap_torch_threads(torch) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(cpus, "available", lambda: 1)
        torch.set_num_threads(2)
        assert cpus.cap_torch_threads(torch) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(kept)


def test_a_default_thread_count_never_exceeds_the_cpus(monkeypatch):
    monkeypatch.setattr(cpus, "available", lambda: 1)
    assert cpus.threads(None, default=2) == 1
    assert cpus.threads(3, default=2) == 3  # asked for: the user's choice
    monkeypatch.setattr(cpus, "available", lambda: 8)
    assert cpus.threads(None, default=2) == 2
