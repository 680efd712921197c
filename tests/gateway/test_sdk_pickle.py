"""The SDK's exceptions cross a process boundary intact. Integrators run the SDK in multiprocessing,
concurrent.futures.ProcessPoolExecutor or Celery workers, which send a raised exception back pickled; pickle
rebuilds one as cls(*args), and these take other arguments than the one text their args hold: a TargetError
could not be unpickled at all (TypeError in the parent instead of the refusal), nor a ScoreError or a
Retryable."""

from __future__ import annotations

import copy
import pickle

import pytest

from preprocess_service.sdk import RequestError, ScoreError, TargetError
from preprocess_service.sdk_errors import Retryable


def round_trip(exc: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(exc))


@pytest.mark.parametrize(
    "exc",
    [
        ScoreError(503, "triton down", "Unavailable"),
        ScoreError("UNREACHABLE", "ConnectionError"),
        TargetError("::1:8001", "an IPv6 address needs brackets"),
        RequestError("fmt must be one of json"),
    ],
)
def test_score_errors_survive_pickle_with_status_detail_and_error(exc):
    back = round_trip(exc)
    assert type(back) is type(exc) and str(back) == str(exc) and back.args == exc.args
    assert (back.status, back.detail, back.error) == (exc.status, exc.detail, exc.error)
    assert copy.copy(exc).detail == exc.detail  # copy takes the same road


def test_a_target_error_stays_a_value_error_and_keeps_its_parts():
    back = round_trip(TargetError("http://", "no host"))
    assert isinstance(back, ScoreError) and isinstance(back, ValueError)
    assert back.status == "BAD_TARGET" and back.detail == "target http://: no host"
    assert (back.target, back.problem) == ("http://", "no host")


def test_a_retryable_survives_pickle_with_its_error_and_wait():
    exc = Retryable(ScoreError(429, "too many requests", "RateLimited"), 2.5)
    back = round_trip(exc)
    assert str(back) == str(exc) == "429: too many requests" and back.retry_after_s == 2.5
    assert isinstance(back.error, ScoreError) and back.error.error == "RateLimited"
