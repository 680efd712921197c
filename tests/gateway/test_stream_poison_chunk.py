"""A chunk whose processing fails every time (a bug its content triggers) fails its stream once, not forever.

Before, each failure closed the stream 1011 and gave that chunk back to be resent: every resume resent it and
failed again, so `avpenet monitor` stopped after its 3 reconnects and any other client looped, the patient's
stream never scored past that chunk. Now a chunk that fails again after the resume is refused as a chunk (its
time kept, its span unheard / faceless, an `error` `processing_failed` naming it) and the stream goes on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.stream_session import TICK, audio, connect, failing_audio, frame, hub, open_stream, resume, text

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.stream import protocol
from preprocess_service.stream import state as state_module
from preprocess_service.stream.protocol import CLOSE_INTERNAL, CLOSE_NORMAL

SID = "stream-poison1"
TRACK = FaceTrack.load_npz(
    (Path(__file__).resolve().parents[2] / "examples/adult-S0003-C02.npz").read_bytes()
)


def _poison_audio(monkeypatch, seq: int, times: int = 10**9) -> list[int]:
    """The feature code raises on audio chunk `seq`, `times` times (a bug its content triggers)."""
    left = [times]

    def fails(chunk: int) -> bool:
        if chunk != seq or left[0] == 0:
            return False
        left[0] -= 1
        return True

    return failing_audio(monkeypatch, fails)


def test_a_chunk_failing_again_after_the_resume_is_refused_and_the_stream_goes_on(monkeypatch):
    the_hub = hub()
    entry = open_stream(the_hub, SID)
    failed = _poison_audio(monkeypatch, 45)
    code, first = connect(the_hub, entry, [audio(k) for k in range(100)], resumed=False)
    assert code == CLOSE_INTERNAL and entry.state.next_seq["audio"] == 45  # given back once, from 45
    last = resume(the_hub, entry, first)
    code, second = connect(
        the_hub, entry, [audio(k) for k in range(45, 100)] + [text({"type": "end"})], True, last
    )
    assert code == CLOSE_NORMAL, second.sent[-3:]  # before: 1011 again, next_seq 45 again, for ever
    assert failed == [45, 45]
    (refused,) = second.errors("processing_failed")
    assert refused["chunk"] == 45 and refused["kind"] == "audio" and "45" in refused["detail"]
    assert not second.errors("not_processed") and not second.errors("internal")
    assert entry.state.n_samples == 100 * TICK  # its time is kept: the audio stays level
    end = next(e for e in second.sent if e["type"] == "end")
    scored = [e["window"] for e in first.sent + second.sent if e["type"] == "score"]
    assert scored == list(range(end["windows"])) and end["windows"] == 8  # every window, once
    (given,) = first.errors("not_processed")
    assert "audio chunk 45" in given["detail"] and "refused" in given["detail"]  # told at the first 1011


def test_a_chunk_that_failed_once_is_processed_on_theresume(monkeypatch):
    """A failure that does not recur (a passing fault) costs nothing: the chunk is processed as sent."""
    the_hub = hub()
    entry = open_stream(the_hub, SID)
    failed = _poison_audio(monkeypatch, 45, times=1)
    code, first = connect(the_hub, entry, [audio(k) for k in range(60)], resumed=False)
    assert code == CLOSE_INTERNAL and entry.state.next_seq["audio"] == 45
    last = resume(the_hub, entry, first)
    code, second = connect(
        the_hub, entry, [audio(k) for k in range(45, 60)] + [text({"type": "end"})], True, last
    )
    assert code == CLOSE_NORMAL and failed == [45] and not second.errors("processing_failed")
    assert entry.state.n_samples == 60 * TICK and not entry.state.unheard.spans  # all heard


def test_a_frame_failing_again_is_a_frame_without_a_face_in_its_slot(monkeypatch):
    start = {"mode": "landmarks", "audio": False, "image_size": [int(v) for v in TRACK.image_size]}
    the_hub = hub()
    entry = open_stream(the_hub, SID, **start)
    landmark_frame, failed = state_module.landmark_frame, []

    def buggy(payload: memoryview, size: tuple[int, int]) -> FaceTrack:
        if len(failed) < 2 and entry.state.n_frames == 12:
            failed.append(12)
            raise ValueError("a bug in the landmark code")
        return landmark_frame(payload, size)

    monkeypatch.setattr(state_module, "landmark_frame", buggy)
    frames = [
        frame({"seq": k, "t": k / contract.FPS}, protocol.landmark_frame_bytes(TRACK, k)) for k in range(40)
    ]
    code, first = connect(the_hub, entry, frames, resumed=False)
    assert code == CLOSE_INTERNAL and entry.state.next_seq["frame"] == 12
    last = resume(the_hub, entry, first, **start)
    code, second = connect(the_hub, entry, frames[12:] + [text({"type": "end"})], True, last)
    assert code == CLOSE_NORMAL and failed == [12, 12]
    (refused,) = second.errors("processing_failed")
    assert (refused["kind"], refused["chunk"]) == ("frame", 12)
    assert entry.state.n_frames == 40  # its slot kept, without a face


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level("CRITICAL", "avpenet.gateway.stream")


def test_a_chunk_failing_after_its_samples_were_taken_keeps_its_time_once(monkeypatch):
    """The second failure comes after the chunk's samples joined the stream: its refusal adds no silence on
    top of them (the first failed before they did, so the resend's are its only ones)."""
    the_hub = hub()
    entry = open_stream(the_hub, SID)
    add_audio, failures = state_module.StreamState.add_audio, []

    def buggy(self, header: dict, payload: memoryview) -> None:
        if header.get("seq") == 45:
            failures.append(45)
            if len(failures) == 1:
                raise RuntimeError("a bug before the append")
            add_audio(self, header, payload)
            raise RuntimeError("a bug after the append")
        add_audio(self, header, payload)

    monkeypatch.setattr(state_module.StreamState, "add_audio", buggy)
    code, first = connect(the_hub, entry, [audio(k) for k in range(100)], resumed=False)
    assert code == CLOSE_INTERNAL
    last = resume(the_hub, entry, first)
    messages = [audio(k) for k in range(entry.state.next_seq["audio"], 100)] + [text({"type": "end"})]
    code, second = connect(the_hub, entry, messages, True, last)
    assert code == CLOSE_NORMAL and second.errors("processing_failed")
    assert entry.state.n_samples == 100 * TICK  # not a chunk's silence more
