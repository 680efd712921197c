"""loadtests.queue_stall: the former queue policy is put back on a copy only, and bad loads are refused."""

from __future__ import annotations

import pytest

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, configs
from loadtests import queue_stall


def test_the_copy_carries_the_former_policy_and_the_repository_none(tmp_path) -> None:
    copy = queue_stall.with_former_policy(DEFAULT_REPOSITORY, tmp_path / "r")
    for part in contract.PARTS:
        policy = configs.parse(copy / part.name / "config.pbtxt").dynamic_batching.default_queue_policy
        assert policy.max_queue_size == queue_stall.FORMER_QUEUE_BOUND and policy.allow_timeout_override
        assert policy.default_timeout_microseconds == queue_stall.FORMER_QUEUE_TIMEOUT_US
        committed = configs.parse(DEFAULT_REPOSITORY / part.name / "config.pbtxt").dynamic_batching
        assert not committed.HasField("default_queue_policy")


@pytest.mark.parametrize("argv", [["--pairs", "0"], ["--rates", "10,0"], ["--seconds", "0"]])
def test_refuses_an_empty_load(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        queue_stall.main(argv)
    assert exc.value.code == 2
