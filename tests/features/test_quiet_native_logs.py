"""`--quiet` also quiets the C++ lines mediapipe prints as a FaceLandmarker is created (avpenet.native_logs)
and hides nothing else: an error's lines, and any line not known to be that noise, still print."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.rendered_set import render_one_clip

from avpenet import native_logs
from avpenet.features import tracked, tracker

ROOT = Path(__file__).resolve().parents[2]
# what each landmarker's creation printed under `avpenet features --quiet`
MEDIAPIPE_NOISE = ("InitGoogle", "XNNPACK delegate", "face_landmarker_graph.cc", "inference_feedback_manager")


@pytest.fixture(scope="module")
def untracked(tmp_path_factory) -> Path:
    """A one-clip rendered set whose MP4 `avpenet features` must track itself (its .npz stamp removed)."""
    root = tmp_path_factory.mktemp("quiet")
    row = render_one_clip(root)
    tracked.stamp_path(root / row["visual"]).unlink()
    return root


def _features(data: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "cli.main", "features", "--data", str(data), "--workers", "1", "--force"]
    env = {**os.environ, **(env or {})}
    env.pop(native_logs.ENV, None)  # only --quiet sets it
    run = subprocess.run([*argv, *extra], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    return run


def test_features_quiet_prints_no_mediapipe_log_lines(untracked):
    """`avpenet features --quiet` printed five mediapipe lines per landmarker ("WARNING: Logging before
    InitGoogle()", "W0000 ... face_landmarker_graph.cc:181] ...", "INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU.", "W0000 ... inference_feedback_manager.cc:121] ..." twice); GLOG_minloglevel and
    TF_CPP_MIN_LOG_LEVEL do not reach them. Without --quiet they still print."""
    loud = _features(untracked)
    assert loud.returncode == 0 and "XNNPACK delegate" in loud.stderr  # the noise this test looks for
    quiet = _features(untracked, "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "MP4s tracked in this run (no matching tracking stamp): 1" in quiet.stdout  # a landmarker ran
    assert not [noise for noise in MEDIAPIPE_NOISE if noise in quiet.stderr], quiet.stderr


def test_features_quiet_still_shows_a_landmarker_that_fails(untracked, tmp_path):
    """A face model mediapipe cannot open, under --quiet: its error still reaches the user."""
    bogus = tmp_path / "face_landmarker.task"
    bogus.write_bytes(b"not a model")
    sha256 = hashlib.sha256(bogus.read_bytes()).hexdigest()
    env = {tracker.MODEL_ENV: str(bogus), tracker.MODEL_SHA256_ENV: sha256}
    run = _features(untracked, "--quiet", env=env)
    assert run.returncode != 0 and "Unable to open zip archive" in run.stderr


def test_hidden_drops_only_the_known_noise_and_nothing_when_the_call_fails(monkeypatch, capfd):
    monkeypatch.delenv(native_logs.ENV, raising=False)
    with native_logs.hiding():  # what the CLI's --quiet runs its command in, workers included
        assert os.environ[native_logs.ENV] == "1"
    assert native_logs.ENV not in os.environ  # and no longer once it has run (a caller's own process)
    written = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nE0000 something real\n"
    with native_logs.hidden():  # without --quiet: untouched
        os.write(2, written)
    assert capfd.readouterr().err == written.decode()
    monkeypatch.setenv(native_logs.ENV, "1")
    with native_logs.hidden():
        os.write(2, written)
    assert capfd.readouterr().err == "E0000 something real\n"
    with pytest.raises(RuntimeError), native_logs.hidden():
        os.write(2, written)
        raise RuntimeError("the landmarker failed")
    assert capfd.readouterr().err == written.decode()  # a failure's lines are all shown
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # descriptor 2 is back


def test_hidden_hides_nothing_when_no_temporary_file_can_be_made(monkeypatch, capfd):
    """A full or read-only TMPDIR: --quiet must not stop the command, only stop hiding the lines."""
    monkeypatch.setenv(native_logs.ENV, "1")

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(native_logs.tempfile, "TemporaryFile", no_space)
    with native_logs.hidden():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert capfd.readouterr().err == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
