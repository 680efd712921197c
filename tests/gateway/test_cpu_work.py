"""Cheap upload work runs on the event loop, the rest on a worker thread (cpu_work.py): cheap is small and,
for decoding, stored raw, so nothing a client can send stalls the loop for long."""

from __future__ import annotations

import asyncio
import io
import threading
import zipfile

import numpy as np
import pytest
import soundfile as sf
from support.gateway import audio_and_landmarks, mp4_bytes
from support.hostile_media import mp3_in_wav

from avpenet.features import wavcodec
from preprocess_service.cpu_work import cheap_to_decode, here_if, small
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.settings import Limits

LIMITS = Limits()


def _request(**parts: bytes) -> ScoreRequest:
    return ScoreRequest(**{name: MediaPart(data=data) for name, data in parts.items()})


def _wav(subtype: str, seconds: float = 2.0, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * rate), np.float32), rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _extensible(subformat_tag: int) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE file whose subformat GUID names `subformat_tag` (PCM data either way)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, np.float32), 8000, format="WAVEX", subtype="PCM_16")
    pcm = (1).to_bytes(2, "little") + wavcodec.SUBTYPE_TAIL
    return buf.getvalue().replace(pcm, subformat_tag.to_bytes(2, "little") + wavcodec.SUBTYPE_TAIL, 1)


def _deflated(npz: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(npz)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    return out.getvalue()


def test_small_is_at_most_the_limit_and_zero_turns_it_off():
    assert small(1000, Limits(inline_bytes=1000)) and not small(1001, Limits(inline_bytes=1000))
    assert not small(0, Limits(inline_bytes=0))


def test_small_raw_light_uploads_are_cheap_to_decode():
    wav, npz = audio_and_landmarks()  # 5 s: 0.46 MB, above the default limit (a 3-s clip is 0.28 MB)
    limits = Limits(inline_bytes=len(wav) + len(npz))
    assert cheap_to_decode(_request(audio=wav, landmarks=npz), limits)
    assert cheap_to_decode(_request(landmarks=npz), limits)
    assert cheap_to_decode(_request(audio=_wav("PCM_U8")), limits)
    assert cheap_to_decode(_request(audio=_extensible(0x0003)), limits)  # float, by its subformat
    assert not cheap_to_decode(_request(audio=wav, landmarks=npz), LIMITS)
    assert not cheap_to_decode(_request(audio=wav, landmarks=npz), Limits(inline_bytes=len(wav)))


@pytest.mark.parametrize(
    "case",
    ["gsm_wav", "mp3_in_wav", "adpcm_extensible", "deflated_npz", "video", "not_media"],
)
def test_compressed_or_unreadable_media_goes_to_a_thread(case):
    """Its decoding costs what it decodes to, not its size (a minute of GSM in a WAV: 98 KB, 66 ms)."""
    wav, npz = audio_and_landmarks()
    limits = Limits(inline_bytes=1 << 20)  # all small enough
    parts = {
        "gsm_wav": {"audio": _wav("GSM610")},
        "mp3_in_wav": {"audio": mp3_in_wav(keep=1.0)},
        "adpcm_extensible": {"audio": _extensible(0x0002)},
        "deflated_npz": {"audio": wav, "landmarks": _deflated(npz)},
        "video": {"video": mp4_bytes(1.0)},
        "not_media": {"audio": b"RIFF....WAVEnot really"},
    }[case]
    assert not cheap_to_decode(_request(**parts), limits)


def _thread_of(cheap: bool) -> tuple[int, int]:
    """(the event loop's thread, the thread the work ran on)."""

    async def main() -> tuple[int, int]:
        return threading.get_ident(), await here_if(cheap, threading.get_ident)

    return asyncio.run(main())


def test_cheap_work_runs_on_the_loop_and_the_rest_on_a_thread():
    loop, ran = _thread_of(True)
    assert ran == loop  # no hand-off to a thread and back
    loop, ran = _thread_of(False)
    assert ran != loop  # a minute of sound must not stall the loop's other requests


def test_arguments_and_errors_pass_either_way():
    for cheap in (True, False):
        assert asyncio.run(here_if(cheap, int, "7", base=8)) == 7
        with pytest.raises(ValueError):
            asyncio.run(here_if(cheap, int, "x"))
