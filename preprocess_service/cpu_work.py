"""Where the Gateway runs an upload's CPU work (parsing, decoding light media): on the replica's event loop
when it is cheap, on a worker thread otherwise.

Both hold the GIL for the same time; what a thread adds is the hand-off. Under load a scheduler trace of the
model mix (3-s clips, a few ms of work each) found the cores idle in thousands of sub-millisecond gaps, 44%
of the idle time between the replica's event loop and its worker threads waking each other
(docs/bench-notes.md, *Where the idle gaps are*). Cheap means bounded by the bytes: a body of at most
`limits.inline_bytes` is parsed here, and a light upload that small is decoded here only when it is stored
raw (a PCM WAV, an uncompressed `.npz`), whose decoding costs about its size. Compressed media costs what it
decodes to (59 s of Opus fit in 177 KB and took 337 ms to decode and resample on the Zen 3 box; a deflated
`.npz` of a minute's track, 4.5 KB and 44 ms), and a minute of raw sound is megabytes: both go to a thread,
so the loop keeps answering probes, streams and the other requests' Triton calls meanwhile. One slot for
every upload was measured worse for that reason (long clips queued behind it). On the model mix the loop
scored more clips than a thread per upload in four alternated pairs of four, for no more CPU per clip, though
the cores' idle share stayed as it was (docs/bench-notes.md, *Small raw uploads on the event loop*).
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from avpenet.features import media, wavcodec
from avpenet.features.memfile import Buffer

if TYPE_CHECKING:
    from preprocess_service.protocol import ScoreRequest
    from preprocess_service.settings import Limits

P = ParamSpec("P")
R = TypeVar("R")

# WAV format tags whose decoding is a copy or a table lookup per sample (cost follows the bytes): PCM, IEEE
# float, A-law, mu-law. ADPCM and GSM in a WAV are codecs (60 s of GSM 6.10: 98 KB, 66 ms).
RAW_WAV_TAGS = frozenset({0x0001, 0x0003, 0x0006, 0x0007})


def small(size: int, limits: Limits) -> bool:
    """At most `limits.inline_bytes` (0: nothing is)."""
    return limits.inline_bytes > 0 and size <= limits.inline_bytes


def cheap_to_decode(request: ScoreRequest, limits: Limits) -> bool:
    """A small light upload whose every part is stored raw: a PCM WAV and/or an uncompressed `.npz`."""
    if request.clip is not None or request.video is not None or not small(request.upload_bytes, limits):
        return False
    return (request.audio is None or raw_wav(request.audio.data)) and (
        request.landmarks is None or stored_npz(request.landmarks.data)
    )


def raw_wav(data: Buffer) -> bool:
    """A WAV or Wave64 of raw samples, by the codec its `fmt ` chunk names (`wavcodec.codec`, what decoding
    reads too); anything unreadable is not (a thread refuses it)."""
    try:
        kind = media.audio_kind(data, media.read_head(data))
        found = wavcodec.codec(data, kind) if kind in media.WAV_KINDS else None
    except Exception:
        return False
    if found is None:
        return False
    if found.tag == wavcodec.EXTENSIBLE:  # the subformat GUID starts with the tag it stands for
        tag = int.from_bytes(found.subformat[:2], "little")
        return found.subformat in wavcodec.SNDFILE_SUBFORMATS and tag in RAW_WAV_TAGS
    return found.tag in RAW_WAV_TAGS


def stored_npz(data: Buffer) -> bool:
    """A ZIP whose every member is stored, not deflated, by its central directory."""
    try:
        with zipfile.ZipFile(media.as_file(data)) as archive:
            return all(m.compress_type == zipfile.ZIP_STORED for m in archive.infolist())
    except Exception:
        return False


async def here_if(cheap: bool, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`work(*args)` on the event loop when `cheap`, else on a worker thread."""
    if cheap:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)
