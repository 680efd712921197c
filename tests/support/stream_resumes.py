"""A bedside device on a flaky link: one second of audio, the link drops, a resume with the stream id
(`Stream.reconnect`: the id goes in the URL, so Serve routes it to the Gateway replica holding the stream),
again."""

from __future__ import annotations

import asyncio

import numpy as np

from avpenet import contract
from preprocess_service.stream.affinity import ROUTER_CONFIG
from preprocess_service.stream.client import Stream, open_stream
from preprocess_service.stream.replay import Recording, send_recording

ONE_SECOND = Recording(wave=np.zeros(contract.SAMPLE_RATE, np.float32))
# The wait for the replicas' routing stats to name a new stream: five collection periods (the controller
# collects them every period, then pushes them to the routers), a margin for a loaded 2-core CI box.
STATS_SETTLE_S = 5 * ROUTER_CONFIG["request_routing_stats_period_s"]


async def hop(stream: Stream) -> None:
    """One second of audio at once, then the link drops (no `end`: the stream stays resumable)."""
    await send_recording(stream, ONE_SECOND, speed=0, end=False)
    await stream.conn.close()


async def resume_hops(
    url: str, key: str, stream_id: str, resumes: int, settle_s: float = STATS_SETTLE_S
) -> list[dict]:
    """Open `stream_id`, then resume it `resumes` times; each resume's `resumed` and `media_s` (1 s more each
    time when every resume found the state). `settle_s`: the wait for the replicas' routing stats to name
    the new stream."""
    stream = await open_stream(url, key, ONE_SECOND.start("adult", stream_id=stream_id))
    await hop(stream)
    await asyncio.sleep(settle_s)
    out = []
    for _ in range(resumes):
        stream = await stream.reconnect()
        out.append({"resumed": stream.started["resumed"], "media_s": stream.started["media_s"]})
        await hop(stream)
    return out
