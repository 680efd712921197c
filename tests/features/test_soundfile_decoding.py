"""WAV/FLAC/OGG through libsndfile when the file is not what its header says: only decoded samples are used,
a damaged tail keeps the decoded start (as PyAV's decoding does), codecs libsndfile cannot seek in still
decode, and a file of an audio type that yields no sample is refused with a reason, never taken for "no audio"
(which would score the clip on the face alone)."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support import testmedia as tm
from support.hostile_media import as_w64, float_wav, gsm_wav, mp3_in_wav, vorbis_cut_in_first_audio_page

from avpenet import contract
from avpenet.errors import UndecodableMedia
from avpenet.features import audio, media, sfaudio

SR = contract.SAMPLE_RATE
ROOT = Path(__file__).parents[2]


def _tone_level(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


def test_a_wav_of_mp3_data_cut_short_gives_the_decoded_samples_not_unfilled_memory():
    whole = audio.load_audio(mp3_in_wav(keep=1.0))
    # the control: MP3 in a WAV decodes (by FFmpeg, which keeps the 87-ms encoder delay libsndfile trimmed)
    assert 0 <= whole.size - 3 * SR < 0.15 * SR
    wave = audio.load_audio(mp3_in_wav(keep=0.5))  # was 422 "samples reach 3e+38", or garbage scored
    assert 0.35 * 3 * SR < wave.size < 0.6 * 3 * SR  # what decoded, not the declared 3 s
    assert np.abs(wave).max() < 0.5 and 0.15 < _tone_level(wave) < 0.3  # the 0.3 tone, not memory
    np.testing.assert_allclose(wave[: SR // 2], whole[: SR // 2], atol=1e-4)


def test_a_flac_cut_mid_upload_keeps_its_decoded_start_like_pyav():
    src = tm.tone(10.0, SR, freq=440.0, amp=0.3)
    blob = tm.audio_bytes(src, SR, "FLAC")
    wave = audio.load_audio(blob[: len(blob) * 6 // 10])  # was 422 "cannot be decoded (LibsndfileError)"
    assert 4.0 * SR < wave.size <= 6.0 * SR  # at most one read of the tail is lost
    np.testing.assert_allclose(wave, audio.load_audio(blob)[: wave.size], atol=1e-6)
    with pytest.raises(UndecodableMedia, match="FLAC file declares audio but no sample decodes"):
        audio.load_audio(blob[:2000])  # nothing decodes before the cut (was libsndfile's "lost sync")


@pytest.mark.parametrize("subtype", ["GSM610", "G721_32"])
def test_telephony_codecs_libsndfile_cannot_seek_in_are_decoded(subtype):
    wave = audio.load_audio(gsm_wav(2.0, subtype))  # was 422 "cannot be decoded (ValueError)"
    assert abs(wave.size - 2 * SR) <= 0.02 * SR  # the codec pads its last block
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    assert np.argmax(spectrum) * SR / wave.size == pytest.approx(440.0, abs=5.0)
    assert 0.1 < _tone_level(wave) < 0.35


def test_an_ogg_cut_before_its_first_audio_page_is_refused_not_taken_for_no_audio():
    with pytest.raises(
        UndecodableMedia, match="OGG file declares audio but no sample decodes: it is corrupt"
    ):
        audio.load_audio(vorbis_cut_in_first_audio_page())  # was None: the clip scored on the face alone


@pytest.mark.parametrize("cut", [5, 30, 200, 1000])
def test_an_ogg_cut_inside_its_headers_is_refused_as_cut_not_with_ffmpegs_end_of_file(cut):
    data = vorbis_cut_in_first_audio_page()[:cut]  # the identification, comment and setup pages take 4 KB
    with pytest.raises(UndecodableMedia) as err:
        audio.load_audio(data)  # was 422 "OGG file could not be opened: End of file"
    assert str(err.value) == (
        "OGG file declares audio but no sample decodes: it is corrupt or truncated; "
        "send the complete recording"
    )


def test_an_empty_wav_is_refused_as_an_empty_recording():
    with pytest.raises(UndecodableMedia, match="WAV file holds no audio samples \\(an empty recording\\)"):
        audio.load_audio(float_wav(np.zeros(0, np.float32), SR, "PCM_16"))


@pytest.mark.parametrize("tag", [0x55, 0x50])
def test_a_wave64_of_mp3_data_decodes_as_the_same_wav_does(tag):
    """libsndfile refused a Wave64 of MP3 data, 422 "Wave64 file cannot be decoded (File contains data in an
    unimplemented format)" (or "Malformed 'fmt ' chunk" for MPEG-1's tag), where the same data in a WAV is
    read by FFmpeg and scored; so is the Wave64 now, cut short too."""
    wav = bytearray(mp3_in_wav(1.0))
    wav[20:22] = tag.to_bytes(2, "little")  # the fmt chunk's format tag
    whole = audio.load_audio(bytes(wav))
    np.testing.assert_array_equal(audio.load_audio(as_w64(bytes(wav))), whole)
    cut = as_w64(bytes(wav))
    wave = audio.load_audio(cut[: len(cut) * 6 // 10])
    assert 0.4 * whole.size < wave.size < 0.7 * whole.size
    np.testing.assert_allclose(wave, whole[: wave.size], atol=1e-4)


@pytest.mark.parametrize("container", ["wav", "w64"])
def test_a_wav_of_mp3_data_cut_at_its_data_header_is_refused_not_taken_for_no_audio(container):
    """Cut just after its data chunk header (no MP3 byte behind it), FFmpeg decoded nothing and the file was
    "no audio": with a face track the clip was scored on the face alone."""
    data = mp3_in_wav(1.0)
    data = as_w64(data) if container == "w64" else data
    samples = data.index(b"data") + (24 if container == "w64" else 8)
    for end in range(samples - 8, samples + 4):
        with pytest.raises(UndecodableMedia, match="declares audio but no sample decodes: it is corrupt"):
            audio.load_audio(data[:end])


def test_a_complete_ogg_still_decodes_whole():
    buf = io.BytesIO()
    sf.write(buf, tm.tone(3.0, SR, freq=440.0, amp=0.3), SR, format="OGG")
    assert abs(audio.load_audio(buf.getvalue()).size - 3 * SR) <= 1


def test_a_damaged_mp3_in_wav_writes_no_upload_bytes_to_the_log(tmp_path):
    """libsndfile's MP3 decoder printed "Illegal Audio-MPEG-Header 0x74d8c299 at offset 4751" to stderr:
    four bytes of the upload in the process log. Such a WAV is now read by FFmpeg, whose log is off."""
    data = bytearray(mp3_in_wav(1.0))
    rng = np.random.default_rng(1)
    for at in rng.integers(200, len(data), 40):
        data[at] = int(rng.integers(256))
    path = tmp_path / "damaged.wav"
    path.write_bytes(bytes(data))
    code = (
        "from avpenet.features import audio\n"
        f"try:\n    audio.load_audio({str(path)!r})\nexcept Exception:\n    pass\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "MPEG-Header" not in run.stderr and "0x" not in run.stderr, run.stderr


def test_libsndfile_reads_an_upload_without_a_second_copy_of_it():
    """Its virtual file's seek exported the BytesIO's buffer to learn the size, which copied the whole upload
    (a 1.9 MB WAV peaked at 1.93 MB): every decode held each upload twice."""
    blob = tm.audio_bytes(tm.tone(60.0, SR, amp=0.3), SR)  # 1.9 MB
    buf = np.empty((audio.READ_BLOCK_FRAMES, 1), np.float32)
    tracemalloc.start()
    try:
        with sf.SoundFile(media.as_file(blob, sfaudio._Upload)) as f:
            frames = sum(len(f.read(out=buf)) for _ in range(0, f.frames, len(buf)))
            f.seek(0)  # libsndfile seeks through its own virtual-file callbacks
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == 60 * SR and len(blob) > 1_900_000
    assert peak < 0.05 * len(blob), f"peak {peak / len(blob):.2f}x the file"


def test_a_decoded_wave_is_held_once_not_as_blocks_and_their_join(tmp_path):
    """The mono blocks were kept in a list and joined at the end, so the whole wave was held twice (a 120-s
    stereo WAV peaked at 2.03x its decoded wave); they are now written into one array. Measured in a fresh
    process: nothing this one cached counts."""
    path = tmp_path / "stereo.wav"
    path.write_bytes(tm.audio_bytes(np.stack([tm.tone(120.0, SR, amp=0.3)] * 2, axis=1), SR))
    code = (
        "import tracemalloc\n"
        "from pathlib import Path\n"
        "from avpenet.features import sfaudio\n"
        f"blob = Path({str(path)!r}).read_bytes()\n"
        "tracemalloc.start()\n"
        "wave, sr = sfaudio.load(blob, 'wav', 600.0)\n"
        "print(tracemalloc.get_traced_memory()[1] / wave.nbytes, wave.size, wave.flags.owndata)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    ratio, size, owned = run.stdout.split()
    assert (int(size), owned) == (120 * SR, "True")
    assert float(ratio) < 1.3, f"peak {float(ratio):.2f}x the decoded wave"


def test_a_cut_flac_keeps_its_decoded_start_in_an_array_of_that_length():
    """Decoded less than declared: the array the declared length was written into shrinks to what decoded."""
    whole = tm.audio_bytes(tm.tone(4.0, SR, amp=0.3), SR, "FLAC")
    wave, sr, declared = sfaudio.read(whole[: len(whole) // 2], "flac", 600.0)
    assert (sr, declared) == (SR, 4 * SR) and 0 < wave.size < declared
    assert wave.flags.owndata and wave.nbytes == 4 * wave.size
    assert np.array_equal(wave, sfaudio.read(whole, "flac", 600.0)[0][: wave.size])
