"""Landmarkers left open are closed at exit: no mediapipe traceback, and forked workers still exit.

Runs a real interpreter end to end, because the failure only exists at interpreter shutdown.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

EXIT_TIMEOUT_S = 300  # generous for a loaded machine; a hang is the failure this guards against

SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from skimage import data

    from avpenet.features import tracker


    def double(x):
        return 2 * x


    image = data.astronaut()
    assert tracker.detect_image(image).face_present[0]  # the shared IMAGE-mode landmarker
    left_open = tracker.FaceTracker()  # never closed by its owner
    left_open.track_frames([image])
    with tracker.pooled() as clip_tracker:  # idle in the pool at exit
        clip_tracker.track_frames([image])
    # a forked worker inherits both landmarkers; it must exit without touching them
    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
        assert list(pool.map(double, range(3))) == [0, 2, 4]
    print("script finished")
    """
)


def test_open_landmarkers_close_quietly_at_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=EXIT_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "script finished" in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]


def test_close_landmarkers_then_detect_again() -> None:
    from skimage import data

    from avpenet.features import tracker

    image = data.astronaut()
    assert tracker.detect_image(image).face_present[0]
    with tracker.pooled() as clip_tracker:
        clip_tracker.track_frames([image])
    tracker.close_landmarkers()  # the pool's idle landmarker too
    assert tracker.detect_image(image).face_present[0]  # re-created on use
    with tracker.pooled() as after:
        assert after is not clip_tracker and after.track_frames([image]).face_present[0]
