"""`avpenet score` through the `avpenet` dispatcher against the session gateway, over HTTP and gRPC."""

from __future__ import annotations

import pytest
from support.gateway import API_KEY, audio_and_landmarks, av_request

from cli.main import main
from preprocess_service.client import score_http

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_avpenet_score_prints_a_table(gateway_stack, tmp_path, capsys, protocol):
    wav, npz = audio_and_landmarks()
    (tmp_path / "cry.wav").write_bytes(wav)
    (tmp_path / "face.npz").write_bytes(npz)
    url = gateway_stack.http_url if protocol == "http" else gateway_stack.grpc_target
    argv = ["score", str(tmp_path / "cry.wav"), str(tmp_path / "face.npz"), "--together", "--url", url]
    argv += ["--api-key", API_KEY, "--age-group", "neonate"] + (["--grpc"] if protocol == "grpc" else [])
    assert main(argv) == 0
    expected = score_http(gateway_stack.http_url, av_request(), api_key=API_KEY)
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("cry.wav+face.npz")).split()
    assert row[1] == protocol
    # the example is an adult's: the neonate sent is questioned under its row
    assert " ".join(out[-1].split()) == "clip reads as adult (P(adult) 1.00), not neonate: check --age-group"
    assert float(row[2]) == pytest.approx(expected.score, abs=0.006) and row[3] == expected.level
    assert main([*argv, "--api-key", "wrong"]) == 1  # the last --api-key wins: refused, exit code 1


def test_help_lists_every_subcommand(capsys):
    from cli.main import COMMANDS

    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
