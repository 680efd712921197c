"""An audio frame's samples are read from the planes its channel layout names, never with PyAV's
`to_ndarray`: PyAV 18 counts an 8-channel planar frame's planes as 9 (FFmpeg holds 8 pointers inline; the
9th "plane" is the frame's line sizes), and reading it segfaulted the process. One upload killed a gateway
replica: an 8-channel WAV of a codec FFmpeg decodes (the reviewer's: format tag 0x4C55, mu-law to FFmpeg,
4 KB) or a 7.1 AAC track in an MP4.

Every check that could segfault runs in a child process, so a regression fails its test instead of ending
pytest; the media is built here (PyAV fills 7.1 interleaved safely) and only decoded there.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from support import hostile_media as hm
from support import testmedia as tm

from avpenet import contract

ROOT = Path(__file__).parents[2]
SR = contract.SAMPLE_RATE
# 1 to 8 channels (8: the most accepted)
LAYOUTS = ("mono", "stereo", "3.0", "quad", "5.0", "5.1", "6.1", "7.1")
FORMATS = ("u8", "s16", "s32", "flt", "dbl")  # each packed and planar ("fltp"): every one PyAV converts

FRAMES = f"""
import av, numpy as np
from avpenet.features import avaudio

def converted(frame, name, layout):
    resampler = av.AudioResampler(format=name, layout=layout, rate=48000)
    return [*resampler.resample(frame), *resampler.resample(None)]

rng, checked = np.random.default_rng(0), 0
for layout in {LAYOUTS!r}:
    n = len(av.AudioLayout(layout).channels)
    source = rng.integers(-32768, 32768, (1, 1001 * n), dtype=np.int16)  # odd: planes are padded past it
    frame = av.AudioFrame.from_ndarray(source, format="s16", layout=layout)
    frame.sample_rate = 48000
    for packed in {FORMATS!r}:
        for name in (packed, packed + "p"):
            outs = converted(frame, name, layout)
            got = np.concatenate([avaudio.channels(out) for out in outs], axis=1)
            if name == packed:  # interleaved: to_ndarray gives [1, samples x channels]
                old = np.concatenate([out.to_ndarray().reshape(-1, n).T for out in outs], axis=1)
                interleaved = old
            elif n < 8:  # what to_ndarray read when it did not crash
                old = np.concatenate([out.to_ndarray() for out in outs], axis=1)
            else:  # to_ndarray segfaults here: the same samples converted to the packed format
                old = interleaved
            assert got.dtype == old.dtype and got.shape == (n, 1001), (layout, name, got.dtype, got.shape)
            assert got.tobytes() == old.tobytes(), (layout, name)
            if packed == "s16":
                assert np.array_equal(got, source.reshape(-1, n).T), (layout, name)
            checked += 1
print(checked)
"""

DECODE = """
import json, sys
import av
import numpy as np
from avpenet.features import audio
out = {}
for path in sys.argv[1:]:
    wave = audio.load_audio(open(path, "rb").read())
    out[path] = [int(wave.size), float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))]
    np.save(path + ".npy", wave)
print(json.dumps(out))
"""


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code, *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, f"exit {run.returncode} (-11: segfault)\n{run.stderr[-3000:]}"
    return run


def _decoded(tmp_path: Path, **media: bytes) -> dict[str, tuple[int, float, np.ndarray]]:
    """{name: (samples, RMS level, the wave)} of each upload, decoded by `audio.load_audio` in a child."""
    paths = {name: tmp_path / f"{name}.bin" for name in media}
    for name, path in paths.items():
        path.write_bytes(media[name])
    found = json.loads(_child(DECODE, *map(str, paths.values())).stdout.splitlines()[-1])
    return {n: (*found[str(p)], np.load(f"{p}.npy")) for n, p in paths.items()}


def test_every_layout_and_sample_format_is_read_as_to_ndarray_read_it():
    """1 to 8 channels, packed and planar u8/s16/s32/flt/dbl: bit for bit what to_ndarray gave where it did
    not crash (8 planar channels: the same samples converted to the packed format)."""
    run = _child(FRAMES)
    assert run.stdout.split() == [str(len(LAYOUTS) * len(FORMATS) * 2)]


def test_an_eight_channel_wav_that_ffmpeg_reads_is_decoded_not_a_segfault(tmp_path):
    found = _decoded(tmp_path, probe=hm.eight_channel_wav(), tone=hm.eight_channel_wav(seconds=3.0))
    assert found["probe"][0] == round(512 * SR / 48_000)  # 4 KB of 8 one-byte channels, at 48 kHz
    size, level, _ = found["tone"]
    assert size == 3 * SR and abs(level - 0.3 / np.sqrt(2)) < 0.01  # the 8 copies of the tone, mixed


def test_a_7_1_aac_track_in_an_mp4_is_decoded_not_a_segfault(tmp_path):
    found = _decoded(tmp_path, surround=hm.surround_mp4("7.1"), mono=hm.surround_mp4("mono"))
    (size, level, _), (mono_size, mono_level, _) = found["surround"], found["mono"]
    assert size == mono_size and abs(size - 2 * SR) < 0.1 * SR
    # the encoder low-passes the LFE channel (120 Hz), so the 440 Hz tone is in 7 of the 8 channels
    assert abs(level - 7 / 8 * mono_level) < 0.01 * mono_level


def test_a_7_1_track_is_mixed_down_as_the_same_channels_in_a_wav_are(tmp_path):
    """The lossless twin of the AAC case: 7.1 PCM in an MKV scores bit for bit as the 8-channel WAV."""
    planes = np.stack([tm.tone(1.0, SR, freq=300.0 + 100 * c, amp=0.05 * (c + 1)) for c in range(8)])
    mkv = io.BytesIO()
    with av.open(mkv, "w", format="matroska") as out:
        stream = out.add_stream("pcm_f32le", rate=SR)
        stream.layout = "7.1"
        tm.encode_audio(out, stream, planes, "7.1", SR, sample_format="flt")
    wav = io.BytesIO()
    sf.write(wav, planes.T, SR, format="WAV", subtype="FLOAT")
    found = _decoded(tmp_path, mkv=mkv.getvalue(), wav=wav.getvalue())
    np.testing.assert_array_equal(found["mkv"][2], found["wav"][2])
