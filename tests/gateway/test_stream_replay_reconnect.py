"""`replay(..., reconnects=N)`: a device's link drops mid-recording, the SDK resumes the stream and goes on.

The link is a real loopback TCP proxy that aborts its first connection (no close frame) after some of the
recording went through (support/cut_link.py); the resume goes through it again to the session's stack."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from support.cut_link import CutLink
from support.gateway import API_KEY

from avpenet import contract
from avpenet.features import audio
from avpenet.features.track import FaceTrack
from preprocess_service.stream.client import ws_url
from preprocess_service.stream.replay import Recording, replay, resume_tick, send_recording

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def recording() -> Recording:
    wave = audio.load_audio((EXAMPLES / "adult-S0003-C02.wav").read_bytes())
    return Recording(wave=wave, track=FaceTrack.load_npz((EXAMPLES / "adult-S0003-C02.npz").read_bytes()))


async def scores(url: str, rec: Recording, reconnects: int) -> tuple[dict[int, float], list[dict], object]:
    events: list[dict] = []
    stream = await replay(url, API_KEY, rec, age_group="adult", speed=4.0, on_event=events.append,
                          reconnects=reconnects)  # fmt: skip
    windows = [e["window"] for e in events if e["type"] == "score"]
    assert len(windows) == len(set(windows)), windows  # each window scored once, none replayed twice
    return {e["window"]: e["score"] for e in events if e["type"] == "score"}, events, stream


def test_a_dropped_link_is_resumed_and_every_window_scored_as_without_the_drop(gateway_stack) -> None:
    rec = recording()
    target = urlsplit(gateway_stack.http_url).port

    async def scenario():
        whole, _, _ = await scores(ws_url(gateway_stack.http_url), rec, reconnects=0)
        async with CutLink(target, cut_after=rec.wave.size * 4 // 2) as link:  # about half the audio
            cut, events, stream = await scores(f"ws://127.0.0.1:{link.port}/v1/stream", rec, reconnects=2)
        return whole, cut, events, stream, link

    whole, cut, events, stream, link = asyncio.run(asyncio.wait_for(scenario(), 240))
    assert link.cut and link.connections == 2
    started = [e for e in events if e["type"] == "started"]
    assert [s["resumed"] for s in started] == [False, True], started
    assert stream.close_code == 1000 and events[-1]["type"] == "end"
    assert sorted(cut) == sorted(whole)
    np.testing.assert_allclose([cut[w] for w in sorted(whole)], [whole[w] for w in sorted(whole)], atol=1e-4)


def test_without_reconnects_a_dropped_link_ends_the_replay(gateway_stack) -> None:
    rec = recording()

    async def scenario():
        async with CutLink(urlsplit(gateway_stack.http_url).port, cut_after=rec.wave.size * 2) as link:
            _, _, stream = await scores(f"ws://127.0.0.1:{link.port}/v1/stream", rec, reconnects=0)
        return stream, link

    stream, link = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert link.cut and link.connections == 1 and stream.close_code == 1006


def test_a_resume_sends_the_handling_state_once_not_every_mark_before_it() -> None:
    """Replaying the marks before the resume point (on, off, on) would open and close a period at the
    resumed media time: a few seconds of windows suppressed for nothing (with the grace after it)."""
    sent: list[tuple] = []

    class Link:
        async def control(self, **msg) -> None:
            sent.append(("handling", msg["active"]))

        async def send_audio(self, piece) -> None:
            sent.append(("audio",))

    rec = Recording(wave=np.zeros(3 * contract.SAMPLE_RATE, np.float32))  # 3 s: 30 ticks
    marks = [(0.5, 1.0), (1.5, 2.5)]
    asyncio.run(send_recording(Link(), rec, speed=0, first_tick=20, handling=marks, end=False))
    assert [s for s in sent if s[0] == "handling"] == [("handling", True), ("handling", False)]
    assert sent[0] == ("handling", True) and sent.count(("audio",)) == 10  # on at 2.0 s; off at 2.5 s


def test_a_resume_goes_on_from_the_kind_still_sending_not_one_that_ended():
    """0.5 s of sound beside 5.5 s of face, the link dropped at tick 50: the resume went on from tick 5, where
    the sound had ended, and slept through the 4.5 s of frames already sent, sending nothing (the server
    closes a stream silent for stall_timeout_s) and declaring handling marks again at the wrong time."""
    track = FaceTrack.empty(55, (640, 480))
    rec = Recording(wave=np.zeros(5 * contract.SAMPLES_PER_FRAME, np.float32), track=track)
    assert resume_tick(rec, {"audio": 5, "frame": 50}) == 50
    assert resume_tick(rec, {"audio": 4, "frame": 50}) == 4  # sound still to send: it leads
    assert resume_tick(rec, {"audio": 5, "frame": 55}) == 55  # both sent to their end
    assert resume_tick(Recording(track=track), {"frame": 30}) == 30
