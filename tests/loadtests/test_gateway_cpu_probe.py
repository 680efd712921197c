"""loadtests.gateway_cpu: the in-process gateway CPU measurement runs a real request path and answers."""

from __future__ import annotations

import asyncio

import pytest

from loadtests import clips, gateway_cpu
from preprocess_service.multipart import parse_score_form


def test_form_parses_as_the_gateway_reads_it():
    body, ctype = gateway_cpu.form([("audio", "a.wav", b"RIFF-bytes", "audio/wav")])
    request = parse_score_form(body, ctype, "r")
    assert request.audio.data == b"RIFF-bytes" and request.age_group == "neonate"


@pytest.mark.integration  # starts a real server
def test_measures_cpu_per_request_against_triton(triton_server):
    body, ctype = gateway_cpu.form([("audio", "a.wav", clips.wav_bytes(3.0), "audio/wav")])
    ms, scores = asyncio.run(gateway_cpu.measure(body, ctype, triton_server.grpc_url, 3, 2))
    assert ms > 0 and len(scores) == 3 and 0.0 <= scores[0] <= 10.0
    assert max(scores) - min(scores) <= 1e-5  # the same clip; batched or alone, rounding may differ by CPU
