"""Hostile uploads against the shared feature code: overflowing samples, forged rates, SDP text behind a
container's magic bytes, forged MP4 sample tables, refused video containers.

Each case was once a denial of service (a wedged Triton, FFmpeg listening on UDP for 30 s, gigabytes for a
6 KB file); here each must end in an `avpenet.errors` type with an actionable reason, without opening a
socket or growing the process (the real-stack corpus bounds the answer time).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest
from support.hostile_media import (
    FORGED_SAMPLES,
    SDP_PROBES,
    edit_list_bomb,
    forge,
    huge_timescale,
    joined_mp3,
    many_channel_ogg,
    many_tracks_mp4,
    two_frame_mp4,
    video,
    with_rate,
)
from support.hostile_media import float_wav as wav
from support.opens import record_av_opens
from support.processes import receiving_udp_sockets

from avpenet import contract
from avpenet.errors import InputError, TooLarge, UndecodableMedia, UnsupportedMedia
from avpenet.features import audio, media, mp4index, tracker


# --- samples ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_float_wav_at_float32_limit_is_refused_not_passed_on(rate):
    x = np.full(144000, 3.4e38, np.float32)
    x[::2] *= -1
    with pytest.raises(UndecodableMedia, match="within ±1e\\+06"):
        audio.load_audio(wav(x, rate))


def test_multichannel_huge_samples_cannot_overflow_in_the_mix():
    x = np.full((48000, 4), 3.0e38, np.float32)  # the float32 sum of the channels is Inf
    with pytest.raises(UndecodableMedia, match="reach 3e\\+38"):
        audio.load_audio(wav(x, 48000))


def test_loud_but_bounded_float_audio_is_scored_with_finite_windows():
    t = np.arange(3 * 48000) / 48000
    tone = np.sin(2 * np.pi * 600 * t)
    x = (32768.0 * 0.5 * tone).astype(np.float32)  # a float WAV written in int16 units: accepted, normalised
    wave = audio.load_audio(wav(x, 48000))
    assert np.isfinite(wave).all()
    win = audio.windows(wave)
    assert np.isfinite(win).all()
    reference = audio.windows(audio.load_audio(wav((0.5 * tone).astype(np.float32), 48000)))
    np.testing.assert_allclose(win, reference, atol=1e-4)  # the level is normalised away


def test_check_wave_catches_non_finite_after_any_step():
    with pytest.raises(UndecodableMedia, match="resampled samples contain NaN"):
        audio.check_wave(np.array([0.0, np.nan], np.float32), "the resampled samples")


@pytest.mark.parametrize("rate", [1, 7999, 192001, 2_100_000_000])
def test_wav_declaring_a_rate_outside_the_accepted_range_is_refused(rate):
    data = with_rate(wav(np.zeros(16000, np.float32), 16000, "PCM_16"), rate)
    with pytest.raises(UndecodableMedia, match=f"{rate} Hz; accepted rates are 8000-192000 Hz"):
        audio.load_audio(data)  # from the header, before any sample is read or resampled


def test_accepted_range_ends_decode():
    for rate in (contract.AUDIO_MIN_INPUT_RATE, contract.AUDIO_MAX_INPUT_RATE):
        wave = audio.load_audio(wav(np.zeros(rate, np.float32), rate, "PCM_16"))
        assert wave.shape == (contract.SAMPLE_RATE,)


@pytest.mark.parametrize("make", [lambda: many_channel_ogg(255), lambda: wav(np.zeros((16000, 10)), 16000)])
def test_more_channels_than_a_bedside_recording_has_are_refused_from_the_header(make):
    with pytest.raises(UndecodableMedia, match=r"declares (255|10) audio channels; at most 8"):
        audio.load_audio(make())


def test_multichannel_audio_is_mixed_down_block_by_block_as_one_read_would():
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (3 * audio.READ_BLOCK_FRAMES + 7, 8)).astype(np.float32)
    mixed = x.mean(axis=1, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(audio.load_audio(wav(x, 16000)), mixed)


def test_an_mp3_whose_rate_and_layout_change_part_way_is_decoded_whole():
    wave = audio.load_audio(joined_mp3(2.0))  # was a ValueError from the resampler (500 / INTERNAL)
    assert abs(wave.size / contract.SAMPLE_RATE - 4.0) < 0.2
    for half in (wave[: 2 * contract.SAMPLE_RATE - 4000], wave[2 * contract.SAMPLE_RATE + 4000 :]):
        assert 0.1 < np.sqrt(np.mean(half**2)) < 0.5  # both halves kept: the tone, not silence or a cut


# --- FFmpeg: no probing, no protocols ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SDP_PROBES))
def test_sdp_behind_magic_bytes_opens_no_socket_and_fails_fast(name):
    # Receiving sockets only: a connected one (a DNS lookup or an address probe by another thread of this
    # process, e.g. the session's Ray driver) is not FFmpeg's.
    me = [psutil.Process()]
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(receiving_udp_sockets(me))
            time.sleep(0.005)

    before = receiving_udp_sockets(me)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(InputError):
            audio.load_audio(SDP_PROBES[name])  # FFmpeg's SDP demuxer bound UDP ports and waited 20-30 s
    finally:
        done.set()
        watcher.join()
    assert seen and max(seen) <= before, "a UDP socket was opened while decoding"


def test_every_av_open_names_its_demuxer_and_forbids_protocols(monkeypatch):
    calls = record_av_opens(monkeypatch)
    with pytest.raises(InputError):
        audio.load_audio(SDP_PROBES["mp3_frame_header"])
    assert calls and calls[0]["format"] == "mp3"
    options = calls[0]["container_options"]
    assert options["protocol_whitelist"] == "" and options["format_whitelist"] == "mp3"
    assert options["max_streams"] == str(media.MAX_STREAMS)


# --- refused video containers ------------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "name"), [("avi", "AVI"), ("mpegts", "MPEG-TS")])
def test_refused_video_containers_say_so_as_audio_and_as_video(fmt, name):
    data = video(fmt)
    message = f"{name} video containers are not accepted; send MP4, MOV, WebM or MKV"
    with pytest.raises(UnsupportedMedia, match=message):
        audio.load_audio(data)
    with pytest.raises(UnsupportedMedia, match=message):
        list(tracker.iter_video_frames(data))


def test_unknown_bytes_still_say_unsupported_audio_type():
    with pytest.raises(UnsupportedMedia, match="unsupported audio type"):
        audio.load_audio(b"\x00" * 64)


# --- MP4 sample tables -------------------------------------------------------------------------------------
SAMPLES = FORGED_SAMPLES
FORGERIES = {
    # stts: one run of 3e7 samples → too many for 20 s at 240 frames/s (413)
    "stts_run": (lambda raw: forge(raw, b"stts", 8, 1, SAMPLES, 1), TooLarge, "30,000,000 samples"),
    # stsz: constant 1-byte samples, 3e7 of them: more data than the file (422)
    "stsz_constant": (lambda raw: forge(raw, b"stsz", 8, 1, SAMPLES), UndecodableMedia, "more data than"),
    # stsz + stsc: the combination that took FFmpeg 1.7 GB and 22 s
    "stsz_stsc": (
        lambda raw: forge(forge(raw, b"stsz", 8, 1, SAMPLES), b"stsc", 16, SAMPLES),
        UndecodableMedia,
        "more data than",
    ),
    # stsz with per-sample sizes: the table would need 120 MB in a 1.5 KB file (422)
    "stsz_table": (lambda raw: forge(raw, b"stsz", 8, 0, SAMPLES), UndecodableMedia, "truncated or forged"),
    "stco_count": (lambda raw: forge(raw, b"stco", 8, SAMPLES), UndecodableMedia, "'stco' table claims"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_sample_tables_are_refused_before_ffmpeg_allocates(name):
    make, error, reason = FORGERIES[name]
    data = huge_timescale(make(two_frame_mp4()))
    assert len(data) < 8192
    me = psutil.Process()
    before = me.memory_info().rss
    samples: list[int] = []
    done = threading.Event()

    def watch() -> None:  # this process's RSS while FFmpeg would be allocating (it took 1.7 GB)
        while not done.is_set():
            samples.append(me.memory_info().rss)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(error, match=reason):
            list(tracker.iter_video_frames(data, tracker.VideoLimits(max_seconds=20)))
        with pytest.raises(error, match=reason):
            audio.load_audio(data, max_seconds=20)
    finally:
        done.set()
        watcher.join()
    grown_mb = (max(samples, default=before) - before) / 2**20
    assert grown_mb < 100, f"RSS grew {grown_mb:.0f} MB"


def test_an_mp4_with_hundreds_of_tracks_is_refused_and_a_few_extra_pass():
    bounds = mp4index.SampleBounds(max_seconds=20)
    mp4index.check_sample_tables(many_tracks_mp4(mp4index.MAX_TRACKS - 1), bounds)
    with pytest.raises(UndecodableMedia, match="991 tracks; a recording has at most 16"):
        mp4index.check_sample_tables(many_tracks_mp4(990), bounds)
    assert mp4index.MAX_TRACKS == media.MAX_STREAMS


def test_an_edit_list_of_thousands_of_entries_is_refused_a_short_one_is_not():
    with pytest.raises(UndecodableMedia, match="edit list has 100,000 entries; a recording has at most 64"):
        list(tracker.iter_video_frames(edit_list_bomb(), tracker.VideoLimits(max_seconds=20)))
    assert list(tracker.iter_video_frames(edit_list_bomb(edits=3), tracker.VideoLimits(max_seconds=20)))


def test_real_mp4_passes_the_walker_and_decodes():
    data = two_frame_mp4()
    mp4index.check_sample_tables(data, mp4index.SampleBounds(max_seconds=20))
    assert len(list(tracker.iter_video_frames(data, tracker.VideoLimits(max_seconds=20)))) == 2


def test_fragmented_mp4_trun_counts_are_bounded():
    data = two_frame_mp4({"movflags": "frag_keyframe+empty_moov"}, frames=4)
    bounds = mp4index.SampleBounds(max_seconds=20)
    mp4index.check_sample_tables(data, bounds)  # the real fragmented file passes
    with pytest.raises(UndecodableMedia, match="'trun' table claims"):
        mp4index.check_sample_tables(forge(data, b"trun", 8, SAMPLES), bounds)


def test_pcm_tracks_are_bounded_per_audio_sample_not_per_frame():
    bounds = mp4index.SampleBounds(max_seconds=20)
    track = mp4index._Track(handler=b"soun", stts_entries=1, stts_first_delta=1, sample_size=2)
    track.sample_count = track.stts_samples = 20 * contract.AUDIO_MAX_INPUT_RATE
    mp4index._check_track(track, file_size=100, bounds=bounds)  # chunk-indexed: within the bound
    track.sample_count += 1
    with pytest.raises(TooLarge, match="audio samples"):
        mp4index._check_track(track, file_size=100, bounds=bounds)
