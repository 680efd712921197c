"""A recording's channels are mixed the same way whatever carries them: a container's audio track (PyAV) is
averaged as a WAV's is (soundfile), so one recording scores the same sent as WAV, MKV or MP4. swresample's
matrix had made a stereo track 3 dB louder and a 5.1 centre-only voice 15.5 dB louder than the WAV."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf
from support import testmedia as tm

from avpenet import contract
from avpenet.features import audio

SR = contract.SAMPLE_RATE


def _planes(layout: str) -> np.ndarray:
    """[channels, samples]: a tone in the first channel (5.1: in its centre, the third), silence elsewhere."""
    tone = tm.tone(1.0, SR, freq=500.0).astype(np.float32)
    planes = np.zeros((len(av.AudioLayout(layout).channels), tone.size), np.float32)
    planes[2 if layout == "5.1" else 0] = tone
    return planes


def _mkv(planes: np.ndarray, layout: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("pcm_f32le", rate=SR)
        stream.layout = layout
        tm.encode_audio(out, stream, planes, layout, SR)
    return buf.getvalue()


@pytest.mark.parametrize("layout", ["stereo", "5.1"])
def test_a_container_track_is_mixed_down_as_a_wav_is(layout):
    planes = _planes(layout)
    wav = io.BytesIO()
    sf.write(wav, planes.T, SR, format="WAV", subtype="FLOAT")
    np.testing.assert_array_equal(audio.load_audio(_mkv(planes, layout)), audio.load_audio(wav.getvalue()))


def test_a_mono_track_is_decoded_unchanged():
    planes = _planes("mono")
    np.testing.assert_array_equal(audio.load_audio(_mkv(planes, "mono")), planes[0])
