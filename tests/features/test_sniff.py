"""Sniffing real-world uploads by content: formats that share leading bytes get the right kind, so a valid
file is decoded and an unsupported one gets the reason that fits it.

A GIF ("GIF89a": first byte 0x47) was called MPEG-TS.
"""

from __future__ import annotations

import pytest
from support.hostile_media import video

from avpenet.errors import InputError, UnsupportedMedia
from avpenet.features import audio, media, tracker


def gif() -> bytes:
    """A small animated GIF89a: first byte 0x47, as an MPEG-TS packet's, but no TS packet spacing."""
    return video("gif", codec="gif", pix_fmt="rgb8")


# --- 0x47: MPEG-TS only with its packet spacing ------------------------------------------------------------
def test_a_gif_is_an_unsupported_type_not_mpeg_ts():
    with pytest.raises(UnsupportedMedia, match="unsupported audio type; send WAV") as err:
        audio.load_audio(gif())
    assert "MPEG-TS" not in str(err.value)
    with pytest.raises(UnsupportedMedia, match="unsupported video type; send MP4") as err:
        list(tracker.iter_video_frames(gif()))
    assert "MPEG-TS" not in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: video("mpegts"), id="ts-188"),
        pytest.param(lambda: video("mpegts", options={"mpegts_m2ts_mode": "1"}), id="m2ts-192"),
        pytest.param(lambda: b"".join(b"\x47" + bytes(203) for _ in range(6)), id="ts-204"),
    ],
)
def test_mpeg_ts_packets_are_named_as_mpeg_ts(data):
    with pytest.raises(UnsupportedMedia, match="MPEG-TS video containers are not accepted"):
        audio.load_audio(data())


def test_a_0x47_at_too_few_packet_starts_is_not_mpeg_ts():
    data = bytearray(video("mpegts"))
    data[3 * 188] = 0
    assert media.sniff_refused(bytes(data[: media.HEAD_BYTES])) is None
    with pytest.raises(InputError, match="unsupported audio type"):
        audio.load_audio(bytes(data))
