"""Refused video work stops costing CPU: the FeatureExtractor's worker thread stops decoding and tracking
once the Gateway cancels the request (deadline or a caller gone) or the request's deadline passes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from support.gateway import extractor_replica, mp4_bytes

from avpenet.features.tracker import Stopped
from preprocess_service import deployments
from preprocess_service.extract import extract
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.settings import Limits

PATIENCE_S = 60.0  # generous: only a broken stop waits this long


def clip() -> ScoreRequest:
    return ScoreRequest(clip=MediaPart(data=mp4_bytes(3.0)), age_group="neonate")


def test_decoding_stops_at_the_first_frame_after_stop_says_so():
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(Stopped):
        extract(clip(), Limits(), stop=stop)
    assert len(asked) == 4  # once before starting, then once per decoded frame: stopped at the third frame


def test_a_request_past_its_deadline_is_not_decoded():
    result = asyncio.run(extractor_replica().extract(clip(), {}, time.time() - 1.0))
    assert result is None


def test_cancelling_the_request_stops_the_worker_thread(monkeypatch):
    started, finished = threading.Event(), threading.Event()
    saw_stop: list[bool] = []

    def working(request, limits, carrier, *, stop):
        started.set()
        give_up = time.monotonic() + PATIENCE_S
        while not stop() and time.monotonic() < give_up:
            time.sleep(0.01)
        saw_stop.append(stop())
        finished.set()
        raise Stopped("stopped")

    monkeypatch.setattr(deployments, "extract", working)

    async def scenario() -> None:
        task = asyncio.create_task(extractor_replica().extract(clip(), {}, None))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()  # what Serve does on the replica when the Gateway cancels the request
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(finished.wait, PATIENCE_S)

    asyncio.run(scenario())
    assert saw_stop == [True]
