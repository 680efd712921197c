"""`avpenet monitor` through the dispatcher against the session gateway: one event per line, JSON or text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.gateway import API_KEY

from cli.main import main
from cli.monitor import describe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.integration
def test_monitor_json_prints_one_typed_object_per_line(gateway_stack, capsys):
    wav, npz = EXAMPLES / "adult-S0003-C02.wav", EXAMPLES / "adult-S0003-C02.npz"
    argv = [
        "monitor",
        str(wav),
        "--landmarks",
        str(npz),
        "--json",
        "--speed",
        "0",
        "--url",
        gateway_stack.http_url,
    ]
    assert main([*argv, "--api-key", API_KEY, "--age-group", "adult", "--handling", "0:2"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["type"] == "started" and events[-1]["type"] == "end"
    scores = [e for e in events if e["type"] == "score"]
    assert [e["window"] for e in scores] == [0, 1, 2, 3] and scores[0]["suppressed"]
    assert main([*argv, "--api-key", "wrong"]) == 1
    assert "API key" in capsys.readouterr().err


def test_event_lines_are_readable():
    score = {"type": "score", "start_s": 2.0, "end_s": 5.0, "score": 7.25, "level": "high", "lag_s": 0.12,
             "interval_90": {"low": 5.0, "high": 9.1}, "suppressed": True}  # fmt: skip
    assert describe(score) == "   2.0-  5.0s score  7.25 (high) 90% 5.0-9.1 lag 0.12s [suppressed]"
    alert = {"type": "alert", "at_s": 9.0, "scale": "nips", "scaled": 5.1, "threshold": 3.0, "since_s": 4.0}
    assert "ALERT nips 5.10 > 3.00 since 4s" in describe(alert)
    assert describe({"type": "signal_lost", "modality": "visual", "at_s": 3.0}).endswith("signal_lost visual")
