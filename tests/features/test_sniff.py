"""Sniffing real-world uploads by content: formats that share leading bytes get the right kind, so a valid
file is decoded and an unsupported one gets the reason that fits it.

An MP4/MOV starting with a box other than `ftyp` (old QuickTime `wide` + `mdat`, moov-first, `free`) was
415; a GIF ("GIF89a": first byte 0x47) was called MPEG-TS.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import testmedia as tm
from support.hostile_media import forge, huge_timescale, two_frame_mp4, video

from avpenet.errors import InputError, TooLarge, UnsupportedMedia
from avpenet.features import audio, media, tracker


def gif() -> bytes:
    """A small animated GIF89a: first byte 0x47, as an MPEG-TS packet's, but no TS packet spacing."""
    return video("gif", codec="gif", pix_fmt="rgb8")


# --- MP4/MOV not starting with ftyp ------------------------------------------------------------------------
FIRST_BOXES = {
    "wide_mdat_moov": lambda mov: tm.rearranged(mov, [b"wide", b"mdat", b"moov"]),  # QuickTime before ftyp
    "mdat_moov": lambda mov: tm.rearranged(mov, [b"mdat", b"moov"]),
    "moov_first": lambda mov: tm.rearranged(mov, [b"moov", b"wide", b"mdat"]),
    "free_first": lambda mov: tm.ftyp_as(mov, b"free"),
    "skip_first": lambda mov: tm.ftyp_as(mov, b"skip"),
}


@pytest.mark.parametrize("name", sorted(FIRST_BOXES))
def test_mp4_mov_starting_with_another_top_level_box_is_decoded(name):
    mov = tm.video_bytes(tm.noise_frames(10, size=(64, 48)), 10, audio=tm.tone(1.0, 16_000), container="mov")
    data = FIRST_BOXES[name](mov)
    assert data[4:8] != b"ftyp"
    np.testing.assert_array_equal(audio.load_audio(data), audio.load_audio(mov))  # was 415
    frames = list(tracker.iter_video_frames(data))
    assert len(frames) == len(list(tracker.iter_video_frames(mov))) == 10


@pytest.mark.parametrize("order", [[b"free", b"mdat", b"moov"], [b"mdat", b"moov"], [b"moov", b"mdat"]])
def test_sample_tables_are_checked_whichever_box_comes_first(order):
    forged = huge_timescale(forge(two_frame_mp4(), b"stts", 8, 1, 30_000_000, 1))
    data = tm.rearranged(forged, order)
    with pytest.raises(TooLarge, match="30,000,000 samples"):  # the walker's reason, before FFmpeg's index
        list(tracker.iter_video_frames(data, tracker.VideoLimits(max_seconds=20)))
    with pytest.raises(TooLarge, match="30,000,000 samples"):
        audio.load_audio(data, max_seconds=20)


@pytest.mark.parametrize(
    "head",
    [
        b"\x00\x00\x00\x04free" + bytes(56),  # a box smaller than its own header
        b"\x00\x00\x00\x08wide\x00\x01\x02\x03" + bytes(52),  # the next box's type is not text
        b"\x00\x00\x00\x01mdat\x00\x00\x00\x00\x00\x00\x00\x02" + bytes(48),  # a 64-bit size under 16
        b"\x00\x00\x00\x10abcd" + bytes(56),  # not a top-level box type
    ],
)
def test_implausible_first_boxes_are_not_mp4(head):
    assert media.sniff(head) is None


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
