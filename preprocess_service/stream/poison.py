"""A chunk whose processing fails with an unexpected error (a bug its content triggers, not a refusal the
checks name) fails its stream once, not on every resume, and a stream whose chunks keep failing ends.

The first failure closes the stream 1011 and gives that chunk back, with every one after it, to be resent
on resume (session.py): the fault may pass (a worker short of memory), and the chunk is then processed as
sent. That is done once per stream: a chunk that fails after it (the same one again after the resume, or any
later one) is refused as a chunk instead: its time kept as any refused chunk's is (audio: unheard silence of
its length; a frame: a frame without a face in its slot), an `error` event `processing_failed` names it, and
the stream goes on. Before, each failure gave the chunk back: each resume resent it and failed again; once
that was mended, a stream whose every chunk failed still reconnected once per chunk, for ever.

MAX_FAILED_IN_A_ROW failures of one kind (audio, or frames) with no chunk of that kind processed between
them end the stream with CLOSE_UNPROCESSABLE (4500) and a fatal `unprocessable` event: the server cannot
process what the stream sends (a broken tracker, content that always triggers a bug); it is not scored, and a
definitive close tells the bedside integration so, where refusing every chunk would go on unscored. Per kind,
so that audio taken between failing frames does not hide them. A failure cutting a window (it names no chunk
to refuse: 1011, as before) counts against the chunk that completed it, so a window failing on every resume
ends the stream too.

Any other failure of the stream's processing (scoring a window, its alert logic) closes 1011 and the client
resumes; MAX_FAILED_IN_A_ROW such closes with no window scored between them end it with 4500 too
(`internal_close`), so a bug no chunk is blamed for cannot loop a stream through reconnects for ever on one
replica either (a replica that dies is not counted: its client sees 1006, and a stream restored elsewhere
counts afresh).

The chunk given back (`Entry.failed_chunk`) and the counts (`Entry.failing`, `Entry.closed_1011`) stay with
the stream on its replica for a resume. They are not in the checkpoint: a stream restored on another replica
starts its media and its seqs afresh, so an old seq names no chunk there (and the client resends nothing to a
stream that started afresh).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from preprocess_service.stream.protocol import CHUNK_KINDS, StreamRejected

if TYPE_CHECKING:
    from preprocess_service.stream.inbound import Item
    from preprocess_service.stream.registry import Entry
    from preprocess_service.stream.state import ReadyWindow

log = logging.getLogger("avpenet.gateway.stream")
CODE = "processing_failed"  # a chunk refused
FATAL = "unprocessable"  # the stream ended (CLOSE_UNPROCESSABLE)
MAX_FAILED_IN_A_ROW = 10  # chunks of one kind: 1 s of frames at 10 fps, of 0.1-s audio chunks


class Unprocessable(Exception):
    """Chunks of one kind kept failing: the stream ends with CLOSE_UNPROCESSABLE, `str()` its reason."""


def refuse(entry: Entry, item: Item, media: tuple[int, int]) -> dict | None:
    """Called as processing `item` raised (a bug): None the first time a chunk of the stream fails (the caller
    re-raises: 1011, the chunk given back), after it the `processing_failed` event of its refusal; raises
    Unprocessable at the bound. `media`: the state's samples and frames before the item (time the failed call
    kept is not kept twice)."""
    kind, seq = item.header.get("kind"), item.header.get("seq")
    if kind not in CHUNK_KINDS or type(seq) is not int:
        return None  # a control message: no chunk to refuse
    _count(entry, kind)
    if entry.failed_chunk is None:
        entry.failed_chunk = (kind, seq)
        return None
    again = entry.failed_chunk == (kind, seq)
    log.error("stream %s: %s chunk %d failed%s; refused", entry.stream_id, kind, seq, again * " again",
              exc_info=True)  # fmt: skip
    gap = "silence counted as no sound" if kind == "audio" else "a frame without a face"
    if not _keep_time(entry, item, media):
        gap = "nothing: the stream's timeline could not take it"
    why = "again after the resume" if again else "after the stream was resumed once for such a failure"
    detail = (
        f"{kind} chunk {seq} failed processing {why} (a server fault, logged with this stream id): refused, "
        f"its time kept as {gap}; do not resend it. The stream goes on; report the stream id and chunk to "
        "the service's operators"
    )
    return {"type": "error", "code": CODE, "kind": kind, "chunk": seq, "detail": detail}


def windows(entry: Entry, item: Item, taken: bool) -> list[ReadyWindow]:
    """The windows the state completes after `item`. A failure there counts against the item's kind (and is
    raised: 1011, or Unprocessable at the bound); with none, a chunk `taken` (processed without a fault)
    clears its kind's count."""
    kind = item.header.get("kind")
    try:
        made = entry.state.ready()
    except Exception:
        if kind in CHUNK_KINDS:
            _count(entry, kind)
        raise
    if taken:
        entry.failing[kind] = 0
    return made


def internal_close(entry: Entry) -> str | None:
    """Called as the stream's processing died of an unexpected error (logged): None to close it 1011 (the
    client resumes), or at the bound the reason to end it 4500. A window scored (`scored`) resets it."""
    entry.closed_1011 += 1
    if (n := entry.closed_1011) < MAX_FAILED_IN_A_ROW:
        return None
    log.error(
        "stream %s: its processing failed %d times in a row with no window scored; ended", entry.stream_id, n
    )
    return (
        f"processing failed on the server {n} times in a row, no window scored: stream ended, do not resume "
        "it; report the stream id to the service's operators (a server fault, logged with it)"
    )


def scored(entry: Entry) -> None:
    """A window of the stream was scored: its processing works, so earlier 1011s are not in a row."""
    entry.closed_1011 = 0


def _count(entry: Entry, kind: str) -> None:
    entry.failing[kind] += 1
    if (n := entry.failing[kind]) >= MAX_FAILED_IN_A_ROW:
        log.error("stream %s: %d %s chunks in a row failed; ended", entry.stream_id, n, kind, exc_info=True)
        raise Unprocessable(  # the close reason is its first 120 bytes
            f"{n} {kind} chunks in a row failed processing on the server: stream ended, do not resume it; "
            "report the stream id to the service's operators (a server fault, logged with it). The stream is "
            "not scored further; a new stream may be opened"
        )


def _keep_time(entry: Entry, item: Item, media: tuple[int, int]) -> bool:
    """Keep the refused chunk's time, unless the failed call had; False when the state takes not even that."""
    state = entry.state
    try:
        if item.header["kind"] == "audio" and state.n_samples == media[0]:
            state.refuse_audio(item.header, len(item.payload or b""))
        elif item.header["kind"] == "frame" and state.n_frames == media[1]:
            state.add_dropped_frame(item.header)
    except StreamRejected:  # a frame whose `t` slot is filled already: its time is held
        pass
    except Exception:  # noqa: BLE001 (logged; skipped, the stream goes on: failing it again would loop)
        log.exception("stream %s: refused chunk %s kept no time", entry.stream_id, item.header.get("seq"))
        return False
    return True
