"""What `avpenet score` and `avpenet monitor` tell a user when the gateway answers badly, against a small
HTTP server on loopback: the server's reason always reaches stderr, nothing is sent before the files are
checked, what was scored before the gateway went away is still shown, and a refused WebSocket upgrade is one
line, not a traceback."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from cli.main import main


class Server:
    """Answers every POST with the queued (status, body) in turn; after `stop_after` answers it drops each
    further connection unanswered (the gateway gone); every GET (a WebSocket upgrade) gets 404."""

    def __init__(self, answers: list[tuple[int, dict]], stop_after: int | None = None) -> None:
        self.seen = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # as a proxy answers a WebSocket upgrade

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                server.seen += 1
                if stop_after is not None and server.seen > stop_after:
                    self.close_connection = True  # no answer at all: the client sees the link drop
                    return
                status, body = answers[min(server.seen, len(answers)) - 1]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self.send_error(404, "no such route")

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def wavs(tmp_path):
    paths = [tmp_path / f"{name}.wav" for name in "ab"]
    for path in paths:
        path.write_bytes(b"RIFF0000WAVE")
    return paths


REFUSED = (422, {"error": "InvalidRequest", "detail": "recorded_at has no time zone; send +01:00 or Z"})


def test_the_servers_reason_reaches_stderr_with_json(wavs, capsys):
    server = Server([REFUSED])
    try:
        code = main(["score", str(wavs[0]), "--url", server.url, "--json", "--retries", "0"])
    finally:
        server.close()
    assert code == 1 and f"error 422: {REFUSED[1]['detail']}" in capsys.readouterr().err


def test_a_missing_file_is_named_before_anything_is_sent(wavs, tmp_path, capsys):
    server = Server([REFUSED])
    try:
        code = main(["score", str(wavs[0]), str(tmp_path / "gone.wav"), "--url", server.url])
    finally:
        server.close()
    assert code == 2 and "no such file" in capsys.readouterr().err and server.seen == 0


def test_what_was_scored_before_the_gateway_went_away_is_shown(wavs, capsys):
    from support.responses import make_response

    answer = json.loads(make_response(3)[0].model_dump_json())
    server = Server([(200, answer)], stop_after=1)
    try:
        code = main(["score", *map(str, wavs), "--url", server.url, "--retries", "0"])
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert code == 1 and "a.wav" in out and f"{answer['score']:5.2f}" in out  # the first clip's row
    assert "cannot reach the gateway" in err and "after the 1 answered were not sent" in err


def test_a_refused_websocket_upgrade_is_one_line(tmp_path, capsys):
    from support.testmedia import audio_bytes, tone

    clip = tmp_path / "cry.wav"
    clip.write_bytes(audio_bytes(tone(3.0, 16000), 16000))
    server = Server([REFUSED])
    try:
        code = main(["monitor", str(clip), "--url", server.url, "--reconnects", "0"])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1 and "stream refused at the WebSocket upgrade" in err and "404" in err
    assert "Traceback" not in err
