"""Uploads in memory are read where they lie: the gateway hands each part on as a view into the request body,
and every decoder (libsndfile, PyAV, the landmarks `.npz` reader, the truncation walk) read such a view
through `bytes(view)` or `BytesIO(view)` before, one more copy of the whole upload per decode. Peaks are
Python allocations (tracemalloc), deterministic for a given input."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf
from support import testmedia as tm
from support.gateway import face_track, mp4_bytes

from avpenet import contract
from avpenet.features import audio, media, memfile, sfaudio, truncation
from avpenet.features.track import FaceTrack

SR = contract.SAMPLE_RATE


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _view(blob: bytes) -> memoryview:
    """What multipart.py hands on: a read-only slice of a larger body."""
    return memoryview(b"--boundary\r\n" + blob + b"\r\n--boundary--").toreadonly()[12 : 12 + len(blob)]


def test_a_view_file_reads_and_seeks_as_bytesio_does():
    blob = bytes(range(256)) * 4
    ours, theirs = memfile.ViewFile(_view(blob)), io.BytesIO(blob)
    for step in [(10, io.SEEK_SET), (5, io.SEEK_CUR), (-3, io.SEEK_END), (2000, io.SEEK_SET)]:
        assert ours.seek(*step) == theirs.seek(*step) and ours.read(7) == theirs.read(7)
    ours.seek(1020), theirs.seek(1020)
    into, theirs_into = bytearray(9), bytearray(9)
    assert ours.readinto(into) == theirs.readinto(theirs_into) == 4 and into == theirs_into
    assert ours.seek(0) == 0 and ours.read() == blob and ours.read(5) == b"" and ours.tell() == len(blob)
    with pytest.raises(ValueError):
        ours.seek(-1)
    assert sfaudio._Upload(blob).seek(-5, io.SEEK_CUR) == 0  # libsndfile's seek before the start stops there
    assert ours.getbuffer().readonly and ours.getbuffer() == blob


def test_libsndfile_decodes_a_view_without_copying_it():
    blob = tm.audio_bytes(tm.tone(60.0, SR, amp=0.3), SR)  # 1.9 MB
    view, buf = _view(blob), np.empty((audio.READ_BLOCK_FRAMES, 1), np.float32)

    def decode() -> None:
        with sf.SoundFile(media.as_file(view, sfaudio._Upload)) as f:
            assert sum(len(f.read(out=buf)) for _ in range(0, f.frames, len(buf))) == 60 * SR

    peak = _peak(decode)
    assert peak < 0.05 * len(blob), f"peak {peak / len(blob):.2f}x the file"
    assert np.array_equal(audio.load_audio(view), audio.load_audio(blob))


def test_pyav_opens_a_view_without_copying_it():
    blob = mp4_bytes(6.0)
    view = _view(blob)

    def demux() -> None:
        with media.open_av(view, "isobmff") as container:
            assert sum(1 for _ in container.demux()) > 0

    peak = _peak(demux)
    assert peak < 0.5 * len(blob), f"peak {peak / len(blob):.2f}x the file"


def test_a_landmarks_file_is_read_from_a_view_without_copying_it():
    blob = face_track(60.0).to_npz_bytes()
    from_bytes = _peak(lambda: FaceTrack.load_npz(blob))
    view = _view(blob)
    from_view = _peak(lambda: FaceTrack.load_npz(view))
    assert from_view < from_bytes + 0.25 * len(blob), f"{(from_view - from_bytes) / len(blob):.2f}x more"
    assert np.array_equal(FaceTrack.load_npz(view).landmarks, FaceTrack.load_npz(blob).landmarks)


def test_the_truncation_walk_reads_a_view_in_place():
    blob = tm.audio_bytes(tm.tone(30.0, SR, amp=0.3), SR)
    view = _view(blob)
    peak = _peak(lambda: truncation.cut_short(view, "wav"))
    assert peak < 0.05 * len(blob), f"peak {peak / len(blob):.2f}x the file"
    assert not truncation.cut_short(view, "wav") and truncation.cut_short(view[:30], "wav")
    amr = b"#!AMR-WB\n" + bytes([0x44]) + bytes(10)  # mode 8: 60 bytes a frame, cut after 10
    assert truncation.cut_short(_view(amr), "amr") and not truncation.cut_short(_view(amr + bytes(50)), "amr")
