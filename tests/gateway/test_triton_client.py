"""The gateway's Triton client: retries on UNAVAILABLE with a shrinking deadline, then 503; no hang."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from support.event_loop import within
from support.triton_fakes import FakeResult

from avpenet import contract
from ensemble.client import CANCEL_BACKSTOP_S, backstop_s
from preprocess_service.errors import (
    GatewayError,
    TritonTimeout,
    TritonUnavailable,
    status_of,
)
from preprocess_service.triton_client import TritonClient, served_outputs

HANG_GUARD_S = 120.0  # far beyond any deadline these tests configure; reaching it means a hang


class Channel:
    """A grpc.aio InferenceServerClient whose calls answer once `release` is set (at once by default)."""

    def __init__(self, answer_at_once: bool = True) -> None:
        self.sent: list[dict] = []
        self.release = asyncio.Event()
        if answer_at_once:
            self.release.set()
        self.ended: list[str] = []  # "answered" or "cancelled", per call
        self.closed = False

    async def infer(self, model, inputs, **kwargs):
        self.sent.append(kwargs)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise
        self.ended.append("answered")
        return FakeResult(58)

    async def close(self) -> None:
        self.closed = True


def use_channel(client: TritonClient, channel: Channel) -> Channel:
    client._channel_client = channel
    client._made_at = float("inf")  # never remade during the test
    return channel


class TestTritonClient:
    def _unavailable(self):
        from tritonclient.utils import InferenceServerException

        return InferenceServerException("down", status="StatusCode.UNAVAILABLE")

    def test_retries_unavailable_with_backoff_then_succeeds(self):
        client = TritonClient("127.0.0.1:1", retries=3, backoff_s=0.01, timeout_s=5)
        calls = []

        async def flaky(remaining):
            calls.append(remaining)
            if len(calls) < 3:
                raise self._unavailable()
            return "ok"

        assert asyncio.run(client._call(flaky)) == "ok"
        assert len(calls) == 3 and calls[0] > calls[2]  # the deadline shrinks across attempts

    def test_gives_up_with_503_after_retries(self):
        client = TritonClient("127.0.0.1:1", retries=2, backoff_s=0.01, timeout_s=5)
        calls = []

        async def down(remaining):
            calls.append(1)
            raise self._unavailable()

        with pytest.raises(TritonUnavailable) as info:
            asyncio.run(client._call(down))
        assert len(calls) == 3 and status_of(info.value)[0] == 503 and info.value.retry_after_s >= 1

    def test_unreachable_server_fails_not_hangs(self, refused_port):
        async def go():
            client = TritonClient(f"127.0.0.1:{refused_port}", retries=2, backoff_s=0.05, timeout_s=3)
            try:
                await client.infer(contract.zero_inputs(contract.ENSEMBLE, 1))
            finally:
                await client.close()

        # A hang guard, not a speed check: the deadline's arithmetic is tested above without a clock.
        with pytest.raises((TritonUnavailable, TritonTimeout)):
            asyncio.run(within(go(), HANG_GUARD_S))

    def test_long_clips_get_a_deadline_per_window(self):
        client = TritonClient("127.0.0.1:1", timeout_s=10, timeout_per_window_s=0.5)
        assert client.deadline_s(1) == 10 and client.deadline_s(20) == 10  # short clips: the base
        assert client.deadline_s(58) == 29  # a 60-s clip may queue behind others' windows
        seen = []

        async def first_budget(remaining):
            seen.append(remaining)
            return "ok"

        asyncio.run(client._call(first_budget, client.deadline_s(58)))
        assert 10 < seen[0] <= 29

    def test_a_calls_grpc_deadline_is_only_its_backstop(self):
        """The gRPC deadline would cancel the call (Triton 2.51 may crash then), so it lies past the time the
        call may queue in every part on a loaded server; no per-request queue timeout is sent (the parts have
        no queue policy: ensemble/configs.py)."""
        client = TritonClient("127.0.0.1:1", timeout_s=10, timeout_per_window_s=0.5)

        channel = use_channel(client, Channel())
        asyncio.run(client.infer(contract.zero_inputs(contract.ENSEMBLE, 58)))
        assert client.answered == 1  # the watchdog's evidence that Triton is busy, not hung
        (kwargs,) = channel.sent
        assert "timeout" not in kwargs
        assert 10 * len(contract.PARTS) + CANCEL_BACKSTOP_S < kwargs["client_timeout"]
        assert kwargs["client_timeout"] <= backstop_s(29.0) + 1e-5


class TestOutputs:
    """adult_probability came with fusion 16; rolled back to an older fusion, Triton answers without it."""

    def test_an_ensemble_without_the_age_output_still_scores(self):
        from ensemble import probe

        client = TritonClient("127.0.0.1:1")
        channel = use_channel(client, Channel())
        channel.infer = _answer(FakeResult(3, missing=(contract.ADULT_PROBABILITY.name,)), channel)
        out = asyncio.run(client.infer(contract.zero_inputs(contract.ENSEMBLE, 3))).outputs
        assert set(out) == {t.name for t in contract.REQUIRED_OUTPUTS}
        assert "outputs" not in channel.sent[0]  # none named: Triton answers those the version has
        probe.check_outputs(out)  # the readiness probe passes too

    def test_an_answer_without_a_score_is_a_failed_inference(self):
        client = TritonClient("127.0.0.1:1")
        channel = use_channel(client, Channel())
        channel.infer = _answer(FakeResult(3, missing=(contract.SCORE.name,)), channel)
        with pytest.raises(GatewayError, match="without score") as caught:
            asyncio.run(client.infer(contract.zero_inputs(contract.ENSEMBLE, 3)))
        assert status_of(caught.value)[0] >= 500

    def test_an_answer_with_a_non_finite_output_is_a_failed_inference_not_a_high_score(self):
        """A broken model version's NaN score was served: level "high" (NaN fails every `<=`) in JSON no
        strict parser reads; the readiness probe, which reads the same outputs, now fails on it too."""
        from ensemble import probe

        class NanScore(FakeResult):
            def as_numpy(self, name):
                out = super().as_numpy(name)
                return np.full_like(out, np.nan) if name == contract.SCORE.name else out

        client = TritonClient("127.0.0.1:1")
        channel = use_channel(client, Channel())
        channel.infer = _answer(NanScore(3), channel)
        with pytest.raises(GatewayError, match="non-finite score") as caught:
            asyncio.run(client.infer(contract.zero_inputs(contract.ENSEMBLE, 3)))
        assert status_of(caught.value)[0] >= 500
        with pytest.raises(GatewayError, match="non-finite"):
            probe.check_outputs(served_outputs(NanScore(1)))

    def test_a_long_clip_answered_by_old_and_new_fusions_joins_what_both_have(self):
        """A rolling update serves fusions with and without adult_probability side by side; a clip over
        MAX_BATCH_SIZE windows is sent in chunks, which may land on both."""
        client = TritonClient("127.0.0.1:1")
        channel = use_channel(client, Channel())
        answers = iter([FakeResult(64), FakeResult(6, missing=(contract.ADULT_PROBABILITY.name,))])
        channel.infer = lambda model, inputs, **kwargs: _answer(next(answers), channel)(
            model, inputs, **kwargs
        )
        out = asyncio.run(client.infer(contract.zero_inputs(contract.ENSEMBLE, 70))).outputs
        assert set(out) == {t.name for t in contract.REQUIRED_OUTPUTS} and len(out[contract.SCORE.name]) == 70


def _answer(result: FakeResult, channel: Channel):
    async def infer(model, inputs, **kwargs):
        channel.sent.append(kwargs)
        return result

    return infer


class TestNoCancellation:
    """Triton 2.51 may crash when a client cancels an inference it is completing (upstream server#7368): the
    gateway stops waiting at its deadline or when its caller leaves, but the call runs on to its answer."""

    def test_a_call_past_its_deadline_answers_504_and_is_not_cancelled(self):
        async def go():
            client = TritonClient("127.0.0.1:1", timeout_s=0.05, retries=0)
            channel = use_channel(client, Channel(answer_at_once=False))
            with pytest.raises(TritonTimeout):
                await client.infer(contract.zero_inputs(contract.ENSEMBLE, 1))
            assert channel.ended == [] and client.answered == 0  # still running on Triton
            assert client.abandoned == 1  # Triton computes it all the same: its request slot stays taken
            closing = asyncio.ensure_future(client.close())
            await asyncio.sleep(0.05)
            assert not channel.closed, "closing the channel would cancel the call"
            channel.release.set()
            await closing
            return channel, client

        channel, client = asyncio.run(within(go(), HANG_GUARD_S))
        assert channel.ended == ["answered"] and channel.closed
        assert client.answered == 1  # a late answer is still evidence that Triton is not hung
        assert client.abandoned == 0

    def test_a_caller_that_goes_away_does_not_cancel_the_call(self):
        async def go():
            client = TritonClient("127.0.0.1:1", timeout_s=10, retries=0)
            channel = use_channel(client, Channel(answer_at_once=False))
            request = asyncio.ensure_future(client.infer(contract.zero_inputs(contract.ENSEMBLE, 1)))
            await asyncio.sleep(0.05)
            request.cancel()  # the HTTP client disconnected: Serve cancels the handler
            with pytest.raises(asyncio.CancelledError):
                await request
            await asyncio.sleep(0.05)
            assert channel.ended == [] and client.abandoned == 1  # admission counts it (limits.py `also`)
            channel.release.set()
            await client.close()
            assert client.abandoned == 0
            return channel

        assert asyncio.run(within(go(), HANG_GUARD_S)).ended == ["answered"]

    def test_the_watchdogs_probe_is_not_cancelled_either(self):
        async def go():
            client = TritonClient("127.0.0.1:1", timeout_s=10, retries=0)
            channel = use_channel(client, Channel(answer_at_once=False))
            with pytest.raises(TimeoutError):
                await client.probe(0.05)
            assert channel.sent[0]["client_timeout"] == pytest.approx(backstop_s(0.05))
            assert client.abandoned == 0  # a probe is not a patient's request: it takes no request slot
            channel.release.set()
            await client.close()
            return channel

        assert asyncio.run(within(go(), HANG_GUARD_S)).ended == ["answered"]

    def test_an_abandoned_call_holds_its_slot_until_triton_answers_it(self):
        """The parts have no queue timeout (ensemble/configs.py): Triton computes every call it was sent, so a
        call whose caller left counts against the replica's request slots until Triton answers it, past its
        deadline too. Otherwise a replica would keep sending work while Triton still owes it dropped calls."""

        async def go():
            client = TritonClient("127.0.0.1:1", timeout_s=0.2, retries=0)
            channel = use_channel(client, Channel(answer_at_once=False))
            request = asyncio.ensure_future(client.infer(contract.zero_inputs(contract.ENSEMBLE, 1)))
            await asyncio.sleep(0.05)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            counts = [client.abandoned]
            await asyncio.sleep(0.5)  # well past the call's 0.2 s deadline
            counts.append(client.abandoned)
            assert channel.ended == []
            channel.release.set()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if not client.abandoned:
                    break
            counts.append(client.abandoned)
            await client.close()
            return counts, channel

        counts, channel = asyncio.run(within(go(), HANG_GUARD_S))
        assert counts == [1, 1, 0] and channel.ended == ["answered"]
