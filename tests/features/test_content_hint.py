"""A 415 says what the upload's bytes look like, never its file name's extension as if it were the content
(`unsupported audio type ('wav' content)` told an integrator its WAV was bad when the bytes were no WAV), and
names base64 text of a media file as such."""

from __future__ import annotations

import base64

import pytest
from support.gateway import wav_bytes

from avpenet.errors import UnsupportedMedia
from avpenet.features import audio, tracker


def refused_audio(data: bytes, name: str = "clip.wav") -> str:
    with pytest.raises(UnsupportedMedia, match=r"unsupported audio type; send WAV") as err:
        audio.load_audio(data, name=name)
    return str(err.value)


def test_bytes_that_are_no_audio_are_not_called_wav_content_whatever_the_name():
    message = refused_audio(b"<html><body>not a recording</body></html>")
    assert "'wav'" not in message and "content)" not in message.split("(")[1]
    assert "its bytes are text, not a known audio or video container" in message
    assert "the content decides, not the file name" in message
    assert "its bytes are not a known audio or video container" in refused_audio(bytes(range(256)) * 4)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(base64.b64encode, id="base64"),
        pytest.param(base64.encodebytes, id="line-wrapped"),
        pytest.param(lambda b: b"data:audio/wav;base64," + base64.b64encode(b), id="data-url"),
    ],
)
def test_base64_text_of_a_wav_is_named_as_such(encode):
    message = refused_audio(encode(wav_bytes(1.0)))
    said = "its bytes are base64 text of a media file (WAV file): send the file's own bytes, not base64"
    assert said in message


def test_a_video_refusal_says_what_the_bytes_are():
    with pytest.raises(UnsupportedMedia, match="unsupported video type; send MP4") as err:
        list(tracker.iter_video_frames(wav_bytes(1.0)))
    assert "its bytes are of another kind: WAV file" in str(err.value)
