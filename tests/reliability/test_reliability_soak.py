"""The soak's memory check measures the service, not the load generator, and only while the load runs."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from loadtests import soak

SLEEPER = [sys.executable, "-c", "import time; b = bytearray(64 << 20); time.sleep(30)"]


def test_stack_rss_leaves_out_locust_and_sampling_waits_for_the_load():
    service = subprocess.Popen(SLEEPER)
    try:
        time.sleep(1.5)  # both allocate their 64 MB
        assert not soak.load_running()
        alone = soak.stack_rss_mb()
        assert alone >= psutil.Process(service.pid).memory_info().rss / 2**20 * 0.99
        locust = subprocess.Popen([*SLEEPER, "locust", "--headless"])
        try:
            time.sleep(1.5)
            assert soak.load_running()
            assert abs(soak.stack_rss_mb() - alone) < 16  # locust's 64 MB are not counted
        finally:
            locust.kill()
            locust.wait()
    finally:
        service.kill()
        service.wait()
