"""A stream whose chunks keep failing processing (a bug on the server, or content that always triggers one)
is bounded: one resume, then failing chunks are refused at once, and a kind failing 10 chunks in a row ends
the stream with close 4500, which the shipped clients do not resume.

Before, each new failing chunk was given back (1011) and refused only after the resume: a stream whose every
chunk failed reconnected once per chunk, for ever, and its patient was never scored; a window whose features
failed did the same, one reconnect per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.stream_session import TICK, audio, connect, failing_audio, frame, hub, open_stream, resume, text

from avpenet import contract
from avpenet.features.track import FaceTrack
from preprocess_service.stream import poison, protocol, route
from preprocess_service.stream import state as state_module
from preprocess_service.stream.client import RESUMABLE
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_UNPROCESSABLE

TRACK = FaceTrack.load_npz(
    (Path(__file__).resolve().parents[2] / "examples/adult-S0003-C02.npz").read_bytes()
)
LANDMARKS = {"mode": "landmarks", "image_size": [int(v) for v in TRACK.image_size]}


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level("CRITICAL", "avpenet.gateway.stream")


def _until_final(the_hub, entry, messages: Callable[[dict], list], limit: int = 15, **start) -> list:
    """Connect, then resume as the shipped client does after a close it resumes (resending from next_seq),
    until a close it does not resume or `limit` connections: [(close code, socket)]."""
    runs = [connect(the_hub, entry, messages(entry.state.next_seq), resumed=False)]
    while runs[-1][0] in RESUMABLE and len(runs) < limit:
        last = resume(the_hub, entry, runs[-1][1], **start)
        runs.append(connect(the_hub, entry, messages(entry.state.next_seq), True, last))
    return runs


def _audio_from(n: int) -> Callable[[dict], list]:
    return lambda next_seq: [audio(k) for k in range(next_seq["audio"], n)] + [text({"type": "end"})]


def _audio_paced(n: int, burst: int = 50) -> Callable[[dict], list]:
    """Up to `burst` chunks a connection (a connection that meets no failure waits for more), then the end
    once the last is sent."""

    def messages(next_seq: dict) -> list:
        last = min(next_seq["audio"] + burst, n)
        return [audio(k) for k in range(next_seq["audio"], last)] + ([text({"type": "end"})] * (last == n))

    return messages


def test_a_stream_whose_every_chunk_fails_ends_4500_after_one_resume(monkeypatch):
    the_hub = hub()
    entry = open_stream(the_hub, "stream-failing1")
    failed = failing_audio(monkeypatch, lambda seq: True)
    runs = _until_final(the_hub, entry, _audio_from(100))
    codes = [code for code, _ in runs]
    assert codes == [CLOSE_INTERNAL, CLOSE_UNPROCESSABLE], codes  # before: 1011 per chunk, for ever
    assert CLOSE_UNPROCESSABLE not in RESUMABLE  # `replay` and `avpenet monitor` stop there
    last = runs[-1][1]
    assert last.closed[0] == CLOSE_UNPROCESSABLE
    (fatal,) = last.errors("unprocessable")
    assert fatal["fatal"] and "10 audio chunks in a row" in fatal["detail"]
    assert "do not resume" in last.closed[1]  # within the close reason's 120 bytes
    assert [e["chunk"] for e in last.errors("processing_failed")] == list(range(8))  # 0 again, then 1-7
    assert failed == [0, *range(9)]  # chunk 0 twice (given back once), 10 failures in a row in all
    assert not last.errors("not_processed")  # nothing to resend: the stream is over


def test_later_failing_chunks_are_refused_at_once_not_given_back_each(monkeypatch):
    """Every fourth chunk fails: one resume (the first failure may be a passing fault), then each failing
    chunk is refused as it comes, its time kept, and the stream is scored to its end."""
    the_hub = hub()
    entry = open_stream(the_hub, "stream-failing2")
    failed = failing_audio(monkeypatch, lambda seq: seq % 4 == 3)
    runs = _until_final(the_hub, entry, _audio_from(100))
    codes = [code for code, _ in runs]
    assert codes == [CLOSE_INTERNAL, CLOSE_NORMAL], codes  # before: a 1011 and a resume per failing chunk
    refused = [e["chunk"] for e in runs[1][1].errors("processing_failed")]
    assert refused == list(range(3, 100, 4)) and failed == [3, *refused]
    assert entry.state.n_samples == 100 * TICK  # each refused chunk's time kept once
    end = next(e for e in runs[1][1].sent if e["type"] == "end")
    scored = [e["window"] for _, socket in runs for e in socket.sent if e["type"] == "score"]
    assert scored == list(range(end["windows"]))


def test_frames_failing_every_time_end_the_stream_though_its_audio_is_fine(monkeypatch):
    """The count is per kind: audio chunks taken between the failing frames do not hide them."""
    the_hub = hub()
    entry = open_stream(the_hub, "stream-failing3", **LANDMARKS)

    def broken(payload: memoryview, size: tuple[int, int]) -> FaceTrack:
        raise ValueError("a bug in the landmark code")

    monkeypatch.setattr(state_module, "landmark_frame", broken)

    def messages(next_seq: dict) -> list:
        out = []
        for k in range(40):
            if k >= next_seq["audio"]:
                out.append(audio(k))
            if k >= next_seq["frame"]:
                landmarks = protocol.landmark_frame_bytes(TRACK, k)
                out.append(frame({"seq": k, "t": k / contract.FPS}, landmarks))
        return [*out, text({"type": "end"})]

    runs = _until_final(the_hub, entry, messages, **LANDMARKS)
    codes = [code for code, _ in runs]
    assert codes == [CLOSE_INTERNAL, CLOSE_UNPROCESSABLE], codes
    (fatal,) = runs[-1][1].errors("unprocessable")
    assert "frame chunks in a row" in fatal["detail"]


def test_a_window_failing_every_time_ends_the_stream_after_10_chunks(monkeypatch):
    """A failure cutting a window names no chunk to refuse: each closes 1011 and the resume's next chunk
    meets it again. Counted against the chunk that completed the window, it ends the stream at the bound."""
    the_hub = hub()
    entry = open_stream(the_hub, "stream-failing4")

    def broken(self, i: int):
        raise RuntimeError("a bug in the window features")

    monkeypatch.setattr(state_module.StreamState, "_window", broken)
    runs = _until_final(the_hub, entry, _audio_from(100), limit=20)
    codes = [code for code, _ in runs]
    assert codes == [CLOSE_INTERNAL] * 9 + [CLOSE_UNPROCESSABLE], codes  # before: 1011 on every resume
    assert poison.MAX_FAILED_IN_A_ROW == 10
    assert entry.state.n_samples == 39 * TICK  # 30 to complete window 0, then one a connection: each once


def test_scoring_failing_every_time_ends_the_stream_after_10_closes(monkeypatch):
    """A bug outside a chunk and its windows (here the alert logic, on every window) names nothing to refuse:
    each closes 1011. Ten such closes with no window scored between them end the stream 4500."""
    from preprocess_service.stream import alerts

    the_hub = hub(StreamLimits(max_ahead_s=60))  # the test sends 30 s of media at once
    entry = open_stream(the_hub, "stream-failing5")

    def broken(self, window):
        raise RuntimeError("a bug in the alert logic")

    monkeypatch.setattr(alerts.AlertMonitor, "feed", broken)
    # More media than ten connections can take (50 chunks each, never the `end`): a connection's failed
    # batch loses its windows, so with 300 chunks a run whose batches came large (the receiver ahead of the
    # processor) used them all up and its 10th connection ended 1000 with nothing left to score.
    runs = _until_final(the_hub, entry, _audio_paced(1000), limit=20)
    codes = [code for code, _ in runs]
    assert codes == [CLOSE_INTERNAL] * 9 + [CLOSE_UNPROCESSABLE], codes  # before: 1011 on every resume
    (fatal,) = runs[-1][1].errors("unprocessable")
    assert "10 times in a row, no window scored" in fatal["detail"]
    assert "do not resume" in runs[-1][1].closed[1]


def test_a_window_scored_between_failures_keeps_the_stream_resuming(monkeypatch):
    """Failures that leave windows scored between them are not in a row: the stream is still being scored."""
    from preprocess_service.stream import alerts

    the_hub = hub(StreamLimits(max_ahead_s=60))
    entry = open_stream(the_hub, "stream-failing6")
    feed, calls = alerts.AlertMonitor.feed, []

    def every_other(self, window):
        calls.append(window)
        if len(calls) % 2 == 0:
            raise RuntimeError("a bug in the alert logic, every other window")
        return feed(self, window)

    monkeypatch.setattr(alerts.AlertMonitor, "feed", every_other)
    runs = _until_final(the_hub, entry, _audio_paced(400), limit=40)
    codes = [code for code, _ in runs]
    assert CLOSE_UNPROCESSABLE not in codes and codes[-1] == CLOSE_NORMAL, codes
    assert codes.count(CLOSE_INTERNAL) >= MAX_IN_A_ROW, codes  # more 1011s than the bound, none in a row
    # Each failure cost the windows its batch had cut: each is named in a `not_scored` error event, so every
    # window of the stream is either scored or named (before, the client saw a gap in the window indices).
    sent = [e for _, socket in runs for e in socket.sent]
    end = next(e for e in sent if e["type"] == "end")
    scored = {e["window"] for e in sent if e["type"] == "score"}
    named = {e["window"] for e in sent if e["type"] == "error" and e["code"] == "not_scored"}
    assert named and not scored & named, (scored, named)
    assert scored | named == set(range(end["windows"])), sorted(set(range(end["windows"])) - scored - named)


MAX_IN_A_ROW = poison.MAX_FAILED_IN_A_ROW


def test_a_fresh_replica_exports_the_4500_count_at_zero():
    """AvpenetStreamsUnprocessable reads `increase` of this counter: a series first scraped at 1 has none, so
    without its 0 from the start the alert missed a replica's first 4500 (most real cases)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from preprocess_service.stream.metrics import StreamMetrics

    registry = CollectorRegistry()
    StreamMetrics(registry)
    assert 'avpenet_gateway_stream_closes_total{code="4500"} 0.0' in generate_latest(registry).decode()


def test_a_resume_of_a_stream_ended_4500_is_refused_with_its_reason(monkeypatch):
    """A client that ignores the 4500 and resumes is told again at once, not given a reconnect per failing
    chunk of that kind while the state is kept."""
    the_hub = hub()
    entry = open_stream(the_hub, "stream-failing7")
    failing_audio(monkeypatch, lambda seq: True)
    runs = _until_final(the_hub, entry, _audio_from(100))
    assert runs[-1][0] == CLOSE_UNPROCESSABLE
    the_hub.registry.detach(entry)
    start = {"type": "start", "mode": "audio", "age_group": "adult", "last_event": entry.event_seq - 1}
    with pytest.raises(protocol.StreamRejected) as refused:
        the_hub.registry.acquire(protocol.Start(**start), entry.stream_id, entry.key_id)
    assert refused.value.code == "unprocessable" and "do not resume" in refused.value.detail
    assert route.REFUSAL_CLOSES["unprocessable"] == CLOSE_UNPROCESSABLE
    # ...unless the stream went further on another replica since (its checkpoint is newer): that copy wins
    newer = {**entry.checkpoint(), "event_seq": entry.event_seq + 5}
    again, resumed = the_hub.registry.acquire(protocol.Start(**start), entry.stream_id, entry.key_id, newer)
    assert again is not entry and not resumed and again.restored and not again.ended
