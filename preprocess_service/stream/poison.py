"""A chunk whose processing fails with an unexpected error (a bug its content triggers, not a refusal the
checks name) fails its stream once, not on every resume.

The first failure closes the stream 1011 and gives that chunk back, with every one after it, to be resent
on resume (session.py): the fault may pass (a worker short of memory), and the chunk is then processed as
sent. If the same chunk (kind and seq) fails again, it is refused as a chunk instead: its time kept as any
refused chunk's is (audio: unheard silence of its length; a frame: a frame without a face in its slot), an
`error` event `processing_failed` names it, and the stream goes on. Before, every failure gave the chunk
back: each resume resent it and failed again, so `avpenet monitor` stopped after its reconnects and any other
client looped for ever, the patient's stream never scored past that chunk.

One chunk per stream is remembered (`Entry.failed_chunk`, the last one a failure was blamed on), with the
stream on its replica for a resume. It is not in the checkpoint: a stream restored on another replica starts
its media and its seqs afresh, so an old seq names no chunk there (and the client resends nothing to a
stream that started afresh). A failure outside a chunk's own processing (scoring, a window's features)
names no chunk: it closes 1011 each time, as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from preprocess_service.stream.protocol import StreamRejected

if TYPE_CHECKING:
    from preprocess_service.stream.inbound import Item
    from preprocess_service.stream.registry import Entry

log = logging.getLogger("avpenet.gateway.stream")
CODE = "processing_failed"


def refuse(entry: Entry, item: Item, media: tuple[int, int]) -> dict | None:
    """Called as processing `item` raised (a bug): None the first time that chunk fails (the caller re-raises:
    1011, the chunk given back), or, when it failed before, the `processing_failed` event of its refusal.
    `media`: the state's samples and frames before the item (time the failed call kept is not kept twice)."""
    kind, seq = item.header.get("kind"), item.header.get("seq")
    if kind not in ("audio", "frame") or type(seq) is not int:
        return None  # a control message: no chunk to refuse
    if entry.failed_chunk != (kind, seq):
        entry.failed_chunk = (kind, seq)
        return None
    log.error("stream %s: %s chunk %d failed again; refused", entry.stream_id, kind, seq, exc_info=True)
    gap = "silence counted as no sound" if kind == "audio" else "a frame without a face"
    if not _keep_time(entry, item, media):
        gap = "nothing: the stream's timeline could not take it"
    detail = (
        f"{kind} chunk {seq} failed processing again after the resume (a server fault, logged with this "
        f"stream id): refused, its time kept as {gap}; do not resend it. The stream goes on; report the "
        "stream id and chunk to the service's operators"
    )
    return {"type": "error", "code": CODE, "kind": kind, "chunk": seq, "detail": detail}


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
