"""Landmarks uploads decoded by concurrent gateway worker threads: a valid file is never refused.

Under load the gateway decodes several uploads at once on worker threads. numpy parses each .npy header with
`ast.literal_eval`, and CPython before 3.12 keeps the AST builder's recursion depth in interpreter-wide state:
two parses at once could fail with "SystemError: AST constructor recursion depth mismatch", which the npz
reader reported as an unreadable file (422 UndecodableMedia for a valid bench clip, ~1 in 1000 requests).
The reader now parses headers one at a time; it also reads each header once (not again to load the data).
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from avpenet import contract
from avpenet.features.track import FaceTrack

THREADS = 6
OVERLAP_WAIT_S = 0.5  # how long the first header parse waits for a second one to start alongside it


def _npz(frames: int = 8, seed: int = 0, **kwargs) -> bytes:
    rng = np.random.default_rng(seed)
    arrays = {
        "landmarks": rng.uniform(0.3, 0.7, (frames, contract.N_LANDMARKS, 3)).astype(np.float32),
        "blendshapes": rng.uniform(0, 1, (frames, contract.N_BLENDSHAPES)).astype(np.float32),
        "face_present": np.ones(frames, bool),
        "head_pose": np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1)),
        "image_size": np.array([320, 320], np.int32),
    }
    out = io.BytesIO()
    np.savez_compressed(out, **{k: kwargs.get("convert", lambda a: a)(v) for k, v in arrays.items()})
    return out.getvalue()


def test_header_parses_never_overlap(monkeypatch):
    """The first parse waits up to OVERLAP_WAIT_S for another thread's parse to begin: without the reader's
    lock one does (the test fails); with it none can, and every upload still decodes."""
    real = {v: getattr(np.lib.format, f"read_array_header_{v}") for v in ("1_0", "2_0")}
    inside, most = [0], [0]
    guard = threading.Lock()
    second = threading.Event()

    def watched(version: str):
        def parse(fh, *args, **kwargs):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                if inside[0] > 1:
                    second.set()
            try:
                second.wait(OVERLAP_WAIT_S)  # only the first waits; a lock makes the others wait for it
                second.set()
                return real[version](fh, *args, **kwargs)
            finally:
                with guard:
                    inside[0] -= 1

        return parse

    for v in real:
        monkeypatch.setattr(np.lib.format, f"read_array_header_{v}", watched(v))
    blob = _npz()
    start = threading.Barrier(THREADS)

    def load(_: int) -> FaceTrack:
        start.wait()
        return FaceTrack.load_npz(blob)

    with ThreadPoolExecutor(THREADS) as pool:
        tracks = list(pool.map(load, range(THREADS)))
    assert most[0] == 1, f"{most[0]} npz header parses ran at once"
    assert all(np.array_equal(t.landmarks, tracks[0].landmarks) for t in tracks)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a,
        np.asfortranarray,
        lambda a: a.astype(a.dtype.newbyteorder(">")),
        lambda a: a[:0] if a.ndim >= 2 or a.dtype == np.bool_ else a,  # zero frames
    ],
    ids=["c-order", "fortran-order", "big-endian", "empty"],
)
def test_arrays_equal_numpy_load(convert):
    """Reading each header once gives the arrays np.load gives (same values, writable, any layout)."""
    blob = _npz(convert=convert)
    track = FaceTrack.load_npz(blob)
    ref = np.load(io.BytesIO(blob), allow_pickle=False)
    for key in contract.TRACK_ARRAYS:
        got = getattr(track, key)
        assert got.flags.writeable
        assert np.array_equal(got, ref[key].astype(got.dtype)), key
