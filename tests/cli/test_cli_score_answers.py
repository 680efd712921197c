"""What `avpenet score` and `avpenet monitor` tell a user when the gateway answers badly, against a small
HTTP server on loopback: the server's reason always reaches stderr, nothing is sent before the files are
checked, what was scored before the gateway went away is still shown, and a refused WebSocket upgrade is one
line, not a traceback."""

from __future__ import annotations

import json

import pytest
from support.fake_gateway import FakeGateway, placeholder_wavs

from cli.main import main


@pytest.fixture()
def wavs(tmp_path):
    return placeholder_wavs(tmp_path)


DETAIL = "recorded_at has no time zone; send +01:00 or Z"
REFUSED = (422, json.dumps({"error": "InvalidRequest", "detail": DETAIL}))


def test_the_servers_reason_reaches_stderr_with_json(wavs, capsys):
    server = FakeGateway([REFUSED])
    try:
        code = main(["score", str(wavs[0]), "--url", server.url, "--json", "--retries", "0"])
    finally:
        server.close()
    assert code == 1 and f"error 422: {DETAIL}" in capsys.readouterr().err


def test_a_missing_file_is_named_before_anything_is_sent(wavs, tmp_path, capsys):
    server = FakeGateway([REFUSED])
    try:
        code = main(["score", str(wavs[0]), str(tmp_path / "gone.wav"), "--url", server.url])
    finally:
        server.close()
    assert code == 2 and "no such file" in capsys.readouterr().err and not server.seen


def test_what_was_scored_before_the_gateway_went_away_is_shown(wavs, capsys):
    from support.responses import make_response

    scored = make_response(3)[0]
    server = FakeGateway([(200, scored.model_dump_json())], stop_after=1)
    try:
        code = main(["score", *map(str, wavs), "--url", server.url, "--retries", "0"])
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert code == 1 and "a.wav" in out and f"{scored.score:5.2f}" in out  # the first clip's row
    assert "stopped after 1 of 2 clips: cannot reach the gateway" in err and "up?." not in err


def test_a_stop_counts_the_clips_answered_as_documents_too(wavs, capsys):
    """With --format hl7v2 (or FHIR) the answers are documents, not table rows: the stop said "after the 0
    answered" though one clip had been scored."""
    message = "MSH|^~\\&|AVPENET|||||20261205||ORU^R01|id-1|P|2.5.1"
    server = FakeGateway([(200, message, {"type": "x-application/hl7-v2+er7"})], stop_after=1)
    try:
        code = main(["score", *map(str, wavs), "--url", server.url, "--retries", "0", "--format", "hl7v2"])
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert code == 1 and "ORU^R01" in out  # the first clip's message was printed
    assert "stopped after 1 of 2 clips: cannot reach the gateway" in err and "up?." not in err


def test_a_redirect_elsewhere_stops_the_run_at_the_first_clip(wavs, tmp_path, capsys):
    """Every clip was uploaded and refused REDIRECT_REFUSED in turn, each counted as that clip's failure."""
    (third,) = placeholder_wavs(tmp_path, "c")
    elsewhere = "http://gateway.example.invalid/v1/score"
    server = FakeGateway([(307, "", {"location": elsewhere})])
    try:
        code = main(["score", *map(str, wavs), str(third), "--url", server.url, "--retries", "0"])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1 and len(server.seen) == 1 and "cannot reach" not in err
    assert f"the gateway URL {server.url} redirects the upload elsewhere" in err and elsewhere in err
    assert "another host" in err and "fix --url" in err and "stopped after 0 of 3 clips (2 not sent)" in err


def test_a_refused_websocket_upgrade_is_one_line(tmp_path, capsys):
    from support.testmedia import audio_bytes, tone

    clip = tmp_path / "cry.wav"
    clip.write_bytes(audio_bytes(tone(3.0, 16000), 16000))
    server = FakeGateway([REFUSED])
    try:
        code = main(["monitor", str(clip), "--url", server.url, "--reconnects", "0"])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1 and "stream refused at the WebSocket upgrade" in err and "404" in err
    assert "Traceback" not in err


def test_a_clip_sent_without_an_age_group_says_which_one_it_was_scored_as(wavs, capsys):
    from support.responses import make_response

    read = make_response(3, age_group="unknown")[0]  # what the gateway answers the CLI's default request
    server = FakeGateway([(200, read.model_dump_json())])
    try:
        code = main(["score", str(wavs[0]), "--url", server.url, "--retries", "0"])
    finally:
        server.close()
    out = capsys.readouterr().out
    assert code == 0 and read.age_read is not None and max(map(len, out.splitlines())) <= 110
    assert (
        f"read from the clip as {read.age_read.group} (P(adult) {read.age_read.adult_probability:.2f})" in out
    )


def test_a_clip_whose_age_group_the_model_contradicts_says_to_check_it(wavs, capsys):
    from support.responses import make_response

    from preprocess_service.protocol import AgeRead

    named, _ = make_response(3, age_group="adult")
    questioned = named.model_copy(update={"age_read": AgeRead.of(0.012, "adult")})
    server = FakeGateway([(200, questioned.model_dump_json())])
    try:
        code = main(["score", str(wavs[0]), "--url", server.url, "--retries", "0", "--age-group", "adult"])
    finally:
        server.close()
    out = capsys.readouterr().out
    assert code == 0 and max(map(len, out.splitlines())) <= 110
    assert "clip reads as neonate (P(adult) 0.01), not adult: check --age-group" in out
