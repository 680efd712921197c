"""loadtests.triton_cpu: repository copies per thread setting, and Triton's CPU read from a real server."""

from __future__ import annotations

import pytest

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY
from ensemble.configs import parse
from loadtests import triton_cpu


def test_each_setting_gets_a_copy_whose_parts_ask_for_that_many_threads(tmp_path):
    configs = {p.name: (DEFAULT_REPOSITORY / p.name / "config.pbtxt").read_bytes() for p in contract.PARTS}
    for threads in (1, 3):
        repo = triton_cpu.repository_with_threads(DEFAULT_REPOSITORY, threads, tmp_path)
        for part in contract.PARTS:
            copied = parse(repo / part.name / "config.pbtxt")
            assert copied.parameters["intra_op_threads"].string_value == str(threads)
    for part in contract.PARTS:  # the source repository is left alone
        assert (DEFAULT_REPOSITORY / part.name / "config.pbtxt").read_bytes() == configs[part.name]


@pytest.mark.integration  # starts a real server
def test_reads_the_cpu_of_triton_and_its_stubs_per_request(triton_server):
    window = triton_cpu.one_window()
    # enough requests that their CPU spans many of the kernel's 10-ms ticks on any CPU: 4 one-window
    # requests read as 0.0 ms on a Zen 5 EPYC in one of four fresh-clone runs
    ms, rate = triton_cpu.triton_cpu_ms(triton_server.grpc_url, triton_server.pid, window, 64, 2)
    assert ms > 0 and rate > 0


def test_a_clip_request_is_laid_out_as_the_gateway_sends_its_clip():
    """N windows: the clip's samples laid once over N rows (what Triton's frontend reads), each window's gain,
    every other input with N rows."""
    from avpenet.features.audio import windows_from_rows

    clip = triton_cpu.clip_request(58)
    assert set(clip) == {t.name for t in contract.ENSEMBLE.inputs}
    assert {a.shape[0] for a in clip.values()} == {58}
    assert clip[contract.AUDIO.name].shape == (58, contract.audio_row_samples(58))
    windows = windows_from_rows(clip[contract.AUDIO.name], clip[contract.WINDOW_GAIN.name])
    # window i starts i hops in: its first 2 s are window i-1's last 2 s (the rows hold the clip, not copies)
    gains = clip[contract.WINDOW_GAIN.name]
    hop = contract.HOP_SAMPLES
    assert windows[1, : 2 * hop] / gains[1] == pytest.approx(windows[0, hop:] / gains[0], rel=1e-5)
    assert (windows != 0).mean(axis=1).min() > 0.99  # every window holds sound, the last one too
    assert clip[contract.FRAME_MASK.name].all() and clip[contract.AUDIO_PRESENT.name].all()


def test_report_has_one_row_per_setting():
    rows = [(0, 0, 16.0, {1: (21.0, 60.0)}), (1, 0, 12.0, {1: (20.0, 50.0)}), (1, 1, 13.0, {1: (22.0, 48.0)})]
    text = triton_cpu.report(rows, [1])
    assert "| 0 (ORT default) | 16.0 | 21.0 | 60.0 |" in text
    assert "| 1 | 12.5 | 21.0 | 49.0 |" in text
