"""`--quiet` for the lines C++ libraries write straight to file descriptor 2.

Creating a mediapipe FaceLandmarker prints, from its C++ (absl/glog and TensorFlow Lite) logging:

    WARNING: Logging before InitGoogle() is written to STDERR
    W0000 00:00:... face_landmarker_graph.cc:181] Sets FaceBlendshapesGraph acceleration to xnnpack by ...
    INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
    W0000 00:00:... inference_feedback_manager.cc:121] Feedback manager requires a model with a single ...

once per landmarker (every clip a worker tracks first, each render `avpenet synth` checks). GLOG_minloglevel
and TF_CPP_MIN_LOG_LEVEL do not reach them (mediapipe's absl logging reads neither), and Python's
sys.stderr never sees them. So under --quiet (`hiding`, around the command the CLI runs, set in the
environment so the spawned workers of `avpenet features` and `avpenet synth` inherit it) `hidden()` points
descriptor 2 at a temporary file for the call it wraps, then writes back every line that is not one of
NOISE; if the call raises, everything, so a Python error's own lines are never lost. Otherwise it does
nothing. Not covered: a native crash inside the call (an abort, a segfault) ends the process before the lines
are written back, so its last words are lost under --quiet (run the command again without it); when no
temporary file can be made, nothing is hidden.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

ENV = "AVPENET_QUIET_NATIVE_LOGS"
# what a landmarker's creation prints on every run: a line holding one of these is dropped under --quiet
NOISE = (
    "Logging before InitGoogle() is written to STDERR",
    "Sets FaceBlendshapesGraph acceleration to xnnpack by default.",
    "Created TensorFlow Lite XNNPACK delegate for CPU.",
    "Feedback manager requires a model with a single signature inference.",
)
_lock = threading.Lock()  # descriptor 2 is the process's: one redirection at a time


@contextlib.contextmanager
def hiding() -> Iterator[None]:
    """Drop NOISE while the block runs, in this process and the workers it starts (the CLI's --quiet)."""
    before = os.environ.get(ENV)
    os.environ[ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def kept(text: str) -> str:
    """`text` without its NOISE lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not any(n in line for n in NOISE))


@contextlib.contextmanager
def hidden() -> Iterator[None]:
    """Within `hiding`: the NOISE lines written to descriptor 2 while the block runs are dropped."""
    if os.environ.get(ENV) != "1":
        yield
        return
    try:
        caught = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the `with` below)
    except OSError:  # TMPDIR full or read-only: the lines show, the command runs
        yield
        return
    with _lock, caught:
        sys.stderr.flush()  # Python's own pending output goes out first, where it was meant to
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors="replace")
            if back := text if failed else kept(text):
                sys.stderr.write(back)
                sys.stderr.flush()
