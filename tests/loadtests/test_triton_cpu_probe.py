"""loadtests.triton_cpu: repository copies per thread setting, and Triton's CPU read from a real server."""

from __future__ import annotations

import pytest

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY
from ensemble.configs import parse
from loadtests import triton_cpu


def test_each_setting_gets_a_copy_whose_parts_ask_for_that_many_threads(tmp_path):
    configs = {p.name: (DEFAULT_REPOSITORY / p.name / "config.pbtxt").read_bytes() for p in contract.PARTS}
    for threads in (1, 3):
        repo = triton_cpu.repository_with_threads(DEFAULT_REPOSITORY, threads, tmp_path)
        for part in contract.PARTS:
            copied = parse(repo / part.name / "config.pbtxt")
            assert copied.parameters["intra_op_threads"].string_value == str(threads)
    for part in contract.PARTS:  # the source repository is left alone
        assert (DEFAULT_REPOSITORY / part.name / "config.pbtxt").read_bytes() == configs[part.name]


@pytest.mark.integration  # starts a real server
def test_reads_the_cpu_of_triton_and_its_stubs_per_request(triton_server):
    window = triton_cpu.one_window()
    ms, rate = triton_cpu.triton_cpu_ms(triton_server.grpc_url, triton_server.pid, window, 4, 2)
    assert ms > 0 and rate > 0


def test_report_has_one_row_per_setting():
    rows = [(0, 0, 16.0, {1: (21.0, 60.0)}), (1, 0, 12.0, {1: (20.0, 50.0)}), (1, 1, 13.0, {1: (22.0, 48.0)})]
    text = triton_cpu.report(rows, [1])
    assert "| 0 (ORT default) | 16.0 | 21.0 | 60.0 |" in text
    assert "| 1 | 12.5 | 21.0 | 49.0 |" in text
