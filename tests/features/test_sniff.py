"""Sniffing real-world uploads by content: formats that share leading bytes get the right kind, so a valid
file is decoded and an unsupported one gets the reason that fits it.

ADTS AAC (.aac from Android and recorders) shares the 0xFFF sync with MP3 frames and was opened as MP3 (422);
an MP4/MOV starting with a box other than `ftyp` (old QuickTime `wide` + `mdat`, moov-first, `free`) was 415;
a GIF ("GIF89a": first byte 0x47) was called MPEG-TS.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from support import testmedia as tm
from support.hostile_media import forge, huge_timescale, two_frame_mp4, video

from avpenet import contract
from avpenet.errors import InputError, TooLarge, UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, media, tracker


def gif() -> bytes:
    """A small animated GIF89a: first byte 0x47, as an MPEG-TS packet's, but no TS packet spacing."""
    return video("gif", codec="gif", pix_fmt="rgb8")


def _dominant_hz(wave: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spec) * contract.SAMPLE_RATE / wave.size)


# --- MPEG audio frames and ADTS AAC ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("second", "kind"),
    [
        (0xFB, "mp3"),  # MPEG-1 Layer III
        (0xF3, "mp3"),  # MPEG-2 Layer III
        (0xE3, "mp3"),  # MPEG-2.5 Layer III
        (0xFD, "mp3"),  # MPEG-1 Layer II
        (0xF1, "aac"),  # ADTS, MPEG-4, no CRC
        (0xF9, "aac"),  # ADTS, MPEG-2, no CRC
        (0xF0, "aac"),  # ADTS with CRC
        (0xE1, None),  # 11-bit sync with the reserved layer 00 and not 0xFFF: neither
    ],
)
def test_frame_sync_bytes_tell_mp3_from_adts(second, kind):
    assert media.sniff(bytes([0xFF, second, 0x50, 0x80]) + bytes(60)) == kind


@pytest.mark.parametrize("id3", [False, True])
def test_adts_aac_is_decoded_as_audio(id3, tmp_path):
    src = tm.tone(1.5, 44_100, freq=800.0)
    data = tm.adts_bytes(src, 44_100, id3=id3)
    assert data[:3] == b"ID3" if id3 else data[:2] == b"\xff\xf1"
    wave = audio.load_audio(data)  # was 422 "MP3 file could not be opened"
    assert abs(wave.size - 1.5 * contract.SAMPLE_RATE) < 0.1 * contract.SAMPLE_RATE  # priming/padding only
    assert _dominant_hz(wave) == pytest.approx(800.0, abs=3.0)
    path = tmp_path / "recording.aac"
    path.write_bytes(data)
    np.testing.assert_array_equal(audio.load_audio(path), wave)


def test_adts_is_opened_with_the_aac_demuxer_alone(monkeypatch):
    calls = []
    real_open = av.open

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_open(*args, **kwargs)

    data = tm.adts_bytes(tm.tone(0.5, 16_000), 16_000)
    monkeypatch.setattr(media.av, "open", spy)
    audio.load_audio(data)
    assert calls[0]["format"] == "aac" and calls[0]["container_options"]["format_whitelist"] == "aac"
    assert calls[0]["container_options"]["protocol_whitelist"] == ""


@pytest.mark.parametrize("cut", [10, 100])
def test_a_truncated_adts_file_is_undecodable_not_an_unsupported_codec(cut):
    data = tm.adts_bytes(tm.tone(1.0, 16_000), 16_000)[:cut]  # FFmpeg finds no frame, so no sample rate
    with pytest.raises(UndecodableMedia, match=r"AAC \(ADTS\) file has no decodable audio frame"):
        audio.load_audio(data)


def test_adts_is_audio_not_video():
    data = tm.adts_bytes(tm.tone(0.5, 16_000), 16_000)
    with pytest.raises(UnsupportedMedia, match="unsupported video type; send MP4, MOV, WebM or MKV"):
        list(tracker.iter_video_frames(data))


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
