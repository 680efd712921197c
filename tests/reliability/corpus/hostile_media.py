"""Corpus cases for hostile media: each once took the service down or scored nothing as a face.

A float WAV at float32's limit wedged Triton; SDP text behind an MP3 or `ftyp` header made FFmpeg listen on
UDP for 20-30 s; a 1.5 KB MP4 with forged sample tables took gigabytes; forged WAV rates stretched or shrank
time; AVI/MPEG-TS were called "audio"; a face track of constant or frozen landmarks got a "moderate" score; a
255-channel Ogg was decoded whole, every channel; an MP3 that changed its rate part-way was a 500; a WAV of
MP3 data cut short was refused for samples from unfilled memory, a GSM WAV for a ValueError; an Ogg cut before
its first audio page was "no audio", so its clip was scored on the face alone; a tiny track whose timestamps
jump minutes filled that hole with gigabytes of silence; a WAV of a codec libsndfile lacks (WMA, a tag nobody
knows) got its words, "Malformed 'fmt ' chunk"; an RF64 cut after its data chunk header was "an empty
recording"; an 8-channel WAV that FFmpeg decodes, or a 7.1 AAC track, segfaulted the replica.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from support import hostile_media as hm

from corpus.cases import Case, Upload, _named, _npz, _npz_with, _tone_wav, _track, _video

BAD = "INVALID_ARGUMENT"


@functools.cache
def _landmarks(value: float | None) -> bytes:
    track = hm.degenerate_landmarks(_track(), value)
    return _npz_with(landmarks=track.landmarks, face_present=track.face_present)


def _wma_wav() -> bytes:
    from support import testmedia

    return testmedia.riff_bytes("wmav2", testmedia.tone(4.0, 44_100, freq=450.0), 44_100, bit_rate=64_000)


def _unknown_codec_wav() -> bytes:
    wav = _tone_wav()
    return wav[:20] + (0x1234).to_bytes(2, "little") + wav[22:]  # the fmt chunk's format tag


def _rf64_cut_at_data() -> bytes:
    from support import testmedia

    rf64 = testmedia.audio_bytes(testmedia.tone(4.0, 16_000, freq=450.0), 16_000, "RF64")
    return rf64[: rf64.index(b"data") + 8]


@functools.cache
def _late_sound_clip() -> bytes:
    from support import testmedia

    return _video(testmedia.noise_frames(30, size=(96, 64)), audio=True, audio_start_s=1.0)


def build() -> list[Case]:
    def one(part: str, ext: str, make: Callable[[], bytes]) -> Callable[[], Upload]:
        return lambda: Upload(files=((part, _named(ext), make()),), fields=(("age_group", b"adult"),))

    def with_face(ext: str, make: Callable[[], bytes]) -> Callable[[], Upload]:
        return lambda: Upload(
            files=(("audio", _named(ext), make()), ("landmarks", _named("npz"), _npz())),
            fields=(("age_group", b"adult"),),
        )

    def rate(hz: int):
        return lambda: hm.with_rate(_tone_wav(), hz)

    cases = [
        ("overflowing_float_wav", "a float WAV of ±3.4e38 samples at 48 kHz (overflowed in resampling)",
         422, BAD, one("audio", "wav", hm.overflowing_wav)),
        ("sdp_behind_mp3_header", "an MP3 frame header, then an SDP session (RTP on loopback): no socket",
         422, BAD, one("audio", "mp3", lambda: hm.SDP_PROBES["mp3_frame_header"])),
        ("sdp_behind_ftyp", "an ISO-BMFF ftyp box, then an SDP session: no socket opened",
         422, BAD, one("audio", "mp4", lambda: hm.SDP_PROBES["ftyp_prefix"])),
        ("mp4_sample_table_bomb", "1.5 KB MP4 whose stsz/stsc claim 3e7 samples (took 1.7 GB): refused",
         422, BAD, one("video", "mp4", hm.sample_table_bomb)),
        ("mp4_sample_count_bomb", "an MP4 whose stts claims 3e7 frames in 15 ms (2e9 timescale)",
         413, "RESOURCE_EXHAUSTED", one("video", "mp4", hm.sample_count_bomb)),
        ("mp4_edit_list_bomb", "an MP4 whose edit list replays it 100,000 times (FFmpeg: seconds, GBs)",
         422, BAD, one("video", "mp4", hm.edit_list_bomb)),
        ("mp4_many_tracks", "an MP4 with its video track copied 990 times",
         422, BAD, one("video", "mp4", lambda: hm.many_tracks_mp4(990))),
        ("wav_rate_1_hz", "a WAV header declaring 1 Hz (4 s of samples would last 18 h)",
         422, BAD, one("audio", "wav", rate(1))),
        ("wav_rate_2_1_ghz", "a WAV header declaring 2.1 GHz",
         422, BAD, one("audio", "wav", rate(2_100_000_000))),
        ("ogg_255_channels", "1 s of 255-channel Ogg Vorbis silence (KBs; a minute of it decoded to 2.9 GB)",
         422, BAD, one("audio", "ogg", lambda: hm.many_channel_ogg(255))),
        ("mp3_rate_changes", "two MP3s joined: 44.1 kHz mono, then 48 kHz stereo (was a 500)",
         200, "OK", one("audio", "mp3", hm.joined_mp3)),
        ("mp3_data_in_wav_cut", "a WAV of MP3 data cut mid-file: its decoded start is scored (was 422, 3e38)",
         200, "OK", one("audio", "wav", lambda: hm.mp3_in_wav(0.5))),
        ("gsm_wav", "an 8 kHz GSM 6.10 WAV (telephony): decoded and scored (was 422, ValueError)",
         200, "OK", one("audio", "wav", hm.gsm_wav)),
        ("wma_in_wav", "a WAV of WMA (format tag 0x0161): decoded by FFmpeg (was 422, malformed fmt chunk)",
         200, "OK", one("audio", "wav", _wma_wav)),
        ("unknown_codec_wav", "a WAV whose fmt chunk names format tag 0x1234: 415 naming it and what to send",
         415, BAD, one("audio", "wav", _unknown_codec_wav)),
        ("eight_channel_wav", "an 8-channel WAV FFmpeg decodes (tag 0x4C55, mu-law): scored (was a segfault)",
         200, "OK", one("audio", "wav", lambda: hm.eight_channel_wav(seconds=4.0))),
        ("aac_7_1_in_mp4", "an MP4 of a 7.1 AAC track: mixed down and scored (segfaulted the replica)",
         200, "OK", one("audio", "mp4", lambda: hm.surround_mp4("7.1", seconds=4.0))),
        ("rf64_cut_at_data", "an RF64 WAV cut just after its data chunk header: cut, not an empty recording",
         422, BAD, one("audio", "wav", _rf64_cut_at_data)),
        ("ogg_cut_before_audio", "an Ogg Vorbis cut in its first audio page, with a face track: refused",
         422, BAD, with_face("ogg", hm.vorbis_cut_in_first_audio_page)),
        ("audio_timestamp_jump", "a 77 KB track, 2nd frame stamped 590 s on: a timestamp break (once 1.4 GB)",
         200, "OK", one("audio", "mkv", hm.timestamp_jump_mkv)),
        ("clip_audio_starts_late", "a clip whose sound starts 1 s after its picture: led in with silence",
         200, "OK", one("clip", "mp4", _late_sound_clip)),
        ("avi_video", "AVI video in the video part: container not accepted",
         415, BAD, one("video", "avi", lambda: hm.video("avi"))),
        ("mpegts_as_audio", "MPEG-TS video in the audio part: a video container, said so",
         415, BAD, one("audio", "ts", lambda: hm.video("mpegts"))),
        ("landmarks_all_zero", "a track with a face in every frame and every landmark 0",
         422, BAD, one("landmarks", "npz", lambda: _landmarks(0.0))),
        ("landmarks_all_half", "every landmark 0.5: a face collapsed to one point",
         422, BAD, one("landmarks", "npz", lambda: _landmarks(0.5))),
        ("landmarks_off_frame", "every landmark 9.99: outside the picture",
         422, BAD, one("landmarks", "npz", lambda: _landmarks(9.99))),
        ("landmarks_frozen", "one real frame copied into every frame: a face that never moves",
         422, BAD, one("landmarks", "npz", lambda: _landmarks(None))),
    ]  # fmt: skip
    return [Case(name, what, status, code, make) for name, what, status, code, make in cases]
