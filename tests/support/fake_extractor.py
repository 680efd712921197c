"""A stand-in for the FeatureExtractor's Ray DeploymentHandle: the gateway's hop to it
(`preprocess_service.deployments.extract_remotely`) can be timed out, failed and cancelled without Serve."""

from __future__ import annotations

import asyncio


class FakeResponse:
    """What `handle.extract.remote()` returns: awaits `delay_s`, then gives `outcome` (raised when it is an
    exception class); records whether the caller cancelled it."""

    def __init__(self, outcome: object, delay_s: float = 0.0) -> None:
        self.outcome, self.delay_s, self.cancelled = outcome, delay_s, False

    def __await__(self):
        return self._wait().__await__()

    async def _wait(self) -> object:
        await asyncio.sleep(self.delay_s)
        if isinstance(self.outcome, type) and issubclass(self.outcome, BaseException):
            raise self.outcome()
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    """A handle whose every `extract.remote()` call returns `response`; keeps the deadline it was given."""

    def __init__(self, response: FakeResponse) -> None:
        self.response = response
        self.extract = self

    def remote(self, request: object, carrier: dict, deadline: float) -> FakeResponse:
        self.deadline = deadline
        return self.response
