"""The supervisor's blocking probe never cancels its inference (unit test: a fake gRPC client).

Triton 2.51 may crash when a client cancels an inference it is completing (upstream server#7368): a probe
that misses its deadline stops waiting, and its channel is closed only once the call has ended."""

from __future__ import annotations

import pytest
import tritonclient.grpc
from support.polling import wait_until
from support.triton_fakes import FakeResult

from ensemble import probe
from ensemble.client import backstop_s


class FakeClient:
    """tritonclient.grpc.InferenceServerClient: answers at once with `answer`, or never (None)."""

    made: list[FakeClient] = []
    answer: tuple | None = None

    def __init__(self, url: str) -> None:
        self.closed = False
        self.kwargs: dict = {}
        self.callback = None
        FakeClient.made.append(self)

    def async_infer(self, model, inputs, callback, **kwargs) -> None:
        self.kwargs, self.callback = kwargs, callback
        if FakeClient.answer is not None:
            result, error = FakeClient.answer
            callback(result=result, error=error)  # as tritonclient calls it: by keyword

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_client(monkeypatch):
    FakeClient.made, FakeClient.answer = [], None
    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", FakeClient)
    return FakeClient


def test_a_probe_past_its_deadline_leaves_the_call_running_and_closes_its_channel_after(fake_client):
    with pytest.raises(TimeoutError):
        probe.probe("g", timeout_s=0.05)
    (client,) = fake_client.made
    assert client.kwargs["client_timeout"] == pytest.approx(backstop_s(0.05))  # only the backstop
    assert "timeout" not in client.kwargs  # the parts have no queue timeout to send one to
    assert not client.closed, "closing the channel would cancel the call"
    client.callback(result=FakeResult(), error=None)  # Triton answers late
    wait_until(lambda: client.closed, 10, "the probe's channel closed after the late answer", step_s=0.01)


def test_an_answered_probe_checks_its_outputs_and_closes(fake_client):
    fake_client.answer = (FakeResult(), None)
    probe.probe("g", timeout_s=0.05)
    assert fake_client.made[0].closed


def test_a_probe_error_is_raised(fake_client):
    from tritonclient.utils import InferenceServerException

    fake_client.answer = (None, InferenceServerException("stub unhealthy", status="StatusCode.INTERNAL"))
    with pytest.raises(InferenceServerException):
        probe.probe("g", timeout_s=0.05)
    assert fake_client.made[0].closed
