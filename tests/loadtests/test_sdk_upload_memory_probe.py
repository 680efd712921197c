"""loadtests.sdk_upload_memory: the figures in docs/INTEGRATION.md come from a real upload to a stand-in."""

from __future__ import annotations

import pytest

from loadtests import sdk_upload_memory


@pytest.mark.parametrize(("protocol", "at_least"), [("http", 1.0), ("grpc", 2.0)])
def test_measures_one_upload_as_multiples_of_the_file(protocol, at_least):
    traced, rss = sdk_upload_memory.measure(protocol, 16)
    assert at_least - 0.05 <= traced <= at_least + 0.2 and rss > 0.5  # the file, and the serialized request
