"""How many CPUs this process may use: its affinity mask and a container's CPU quota (cgroups v1 and v2),
both of which `os.cpu_count()` ignores. joblib reads them (`joblib.cpu_count`, loky's reading of cgroups).

Why it matters: PyTorch's default pool takes one thread per core it sees, and an OpenMP pool larger than
the CPUs it gets waits at every barrier for threads that are not running. Measured on a 2-core box (model
convolutions, 300 small calls): 2 threads under a 1-CPU quota took 4.3 s against 0.7 s with 1 thread; with
the other core busy, 13.7 s against 1.2 s. A container that sees 64 cores and may use 2 is that, 32 times.
"""

from __future__ import annotations

import joblib


def available() -> int:
    """CPUs this process may run on at once (at least 1): affinity and CPU quota, the smaller."""
    return max(1, int(joblib.cpu_count(only_physical_cores=False)))


def threads(requested: int | None, default: int) -> int:
    """A thread count a command was given, else `default` or `available()`, the smaller."""
    return requested or min(default, available())


def cap_torch_threads(torch) -> int:
    """Lower PyTorch's intra-op threads to `available()` when it took more; returns the count it keeps.
    A count set lower on purpose (`avpenet train --threads`, OMP_NUM_THREADS) stays."""
    threads = min(torch.get_num_threads(), available())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
