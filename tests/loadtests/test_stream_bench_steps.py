"""loadtests.streams: a stream that fails to open fails its step; the ladder stops there and still reports.

Found at 96 landmark streams on the 2-core box: one WebSocket handshake timed out, the exception left the
whole `avpenet stream-bench` run, and the steps already measured were lost with it (no --out written)."""

from __future__ import annotations

import asyncio
import json

import pytest

from loadtests import streams


def fake_streams(monkeypatch: pytest.MonkeyPatch, fail_from: int) -> None:
    """Streams answering one window each; in a step of `fail_from` or more, every other one fails to open."""
    opened: list[int] = []

    async def one_stream(url, key, rec, age_group):
        opened.append(1)
        if rec["n"] >= fail_from and len(opened) % 2:
            raise TimeoutError("timed out during opening handshake")
        return {"client_lag": [0.05], "server_lag": [0.04], "errors": [], "close": 1000}

    def recording(mode, seconds):
        return {"n": 0}

    monkeypatch.setattr(streams, "one_stream", one_stream)
    monkeypatch.setattr(streams, "recording", recording)
    real_step = streams.step

    async def step(url, key, rec, n):
        rec["n"] = n
        return await real_step(url, key, rec, n)

    monkeypatch.setattr(streams, "step", step)


def test_a_stream_that_fails_to_open_fails_the_step_and_the_ladder_reports(monkeypatch) -> None:
    fake_streams(monkeypatch, fail_from=8)
    result = streams.ladder("ws://127.0.0.1:1", None, "landmarks", 5.0, [2, 4, 8, 16])
    assert result["max_streams_lag_p99_under_1s"] == 4
    last = result["steps"][-1]
    assert last["streams"] == 8 and last["abnormal_closes"] == 4
    assert last["errors"] == ["4 streams failed (TimeoutError: timed out during opening handshake)"]
    assert len(result["steps"]) == 3  # stopped at the failed step
    assert "4 streams failed (TimeoutError" in streams.report([result], "stream-bench", 0.0)


def test_a_step_whose_every_stream_failed_has_no_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(url, key, rec, age_group):
        raise ConnectionResetError("reset")

    monkeypatch.setattr(streams, "one_stream", failing)
    row = asyncio.run(streams.step("ws://127.0.0.1:1", None, None, 3))
    assert row["windows"] == 0 and row["client_lag_p99_s"] is None and row["abnormal_closes"] == 3


def test_streams_that_opened_only_as_others_ended_fail_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found with the Gateway's former Ray cap (32): a step of 48 opened 32, then 16 as those ended; every
    stream's lag was fine, so the step read as 48 held."""
    spans = iter([(0.0, 20.0), (0.1, 20.1), (20.2, 40.0)])

    async def one_stream(url, key, rec, age_group):
        return {"client_lag": [0.05], "server_lag": [0.04], "errors": [], "close": 1000, "span": next(spans)}

    monkeypatch.setattr(streams, "one_stream", one_stream)
    row = asyncio.run(streams.step("ws://127.0.0.1:1", None, None, 3))
    assert row["open_at_once"] == 2
    assert row["errors"] == ["only 2 of 3 streams were open at once"]
    assert streams.most_at_once([(0.0, 1.0), (1.0, 2.0)]) == 1  # one closing as the next opens: never two
    assert streams.most_at_once([(0.0, 2.0), (1.0, 3.0), (1.5, 1.6)]) == 3


def test_the_local_stack_holds_the_ladders_last_step_and_the_gateways_cap_with_it(
    monkeypatch, tmp_path
) -> None:
    """Every stream of the last step is admitted (none refused 4429) and the Gateway's Ray cap holds them:
    below it, streams past the cap waited to open while the ones open ran (check_capacity)."""
    import argparse

    from preprocess_service import stack as stack_module
    from preprocess_service.serve_config import GATEWAY, GATEWAY_HEADROOM
    from preprocess_service.settings import Limits

    made: dict = {}

    class FakeStack:
        http_url = "http://127.0.0.1:1"

        def __init__(self, **kwargs) -> None:
            made.update(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    monkeypatch.setattr(stack_module, "LocalStack", FakeStack)
    steps = [{"windows": 3}]
    monkeypatch.setattr(
        streams,
        "ladder",
        lambda url, key, mode, s, counts: {"mode": mode, "max_streams_lag_p99_under_1s": 0, "steps": steps},
    )
    parser = argparse.ArgumentParser()
    streams.add_arguments(parser)
    out = tmp_path / "results.json"
    assert (
        streams.run(parser.parse_args(["--counts", "8,96", "--modes", "landmarks", "--out", str(out)])) == 0
    )
    assert json.loads(out.read_text())["results"][0]["steps"] == steps  # a measured run writes its results
    assert made["args"]["streams"] == {"max_streams": 96, "max_streams_per_key": 96}
    need = 96 + Limits().max_in_flight + GATEWAY_HEADROOM
    assert made["deployments"] == {GATEWAY: {"max_ongoing_requests": need, "max_queued_requests": need}}


def test_a_step_whose_streams_dropped_frames_fails_and_says_how_many(monkeypatch: pytest.MonkeyPatch) -> None:
    async def one_stream(url, key, rec, age_group):
        lag = {"client_lag": [0.05], "server_lag": [0.04], "close": 1000, "span": (0.0, 1.0)}
        return {**lag, "errors": ["frames_dropped"], "frames_dropped": 7}

    monkeypatch.setattr(streams, "one_stream", one_stream)
    row = asyncio.run(streams.step("ws://127.0.0.1:1", None, None, 2))
    assert row["frames_dropped"] == 14 and row["errors"] == ["frames_dropped"]
    report = streams.report([{"mode": "video", "max_streams_lag_p99_under_1s": 0, "steps": [row]}], "x", 0.0)
    assert "frames_dropped (14)" in report


def test_the_notes_file_goes_in_every_report_and_the_committed_one_holds_it() -> None:
    """Figures measured outside a run (A/B comparisons, earlier runs) live in docs/stream-bench-notes.md, so a
    new `--markdown` report keeps them; the committed report carries them as they are."""
    result = {"mode": "landmarks", "max_streams_lag_p99_under_1s": 0, "steps": []}
    report = streams.report([result], "stream-bench", 0.0, "- **A note.** Measured elsewhere.")
    assert report.index("(at once).") < report.index("A note.") < report.index("| mode | most streams")
    notes = streams.NOTES.read_text().strip()
    assert notes and notes in streams.MARKDOWN.read_text()


def test_unknown_modes_and_counts_are_refused_naming_the_flag(capsys) -> None:
    """`--modes foo` ran foo as video and reported {"foo": 0}; `--counts x` was a ValueError from int()."""
    import argparse

    parser = argparse.ArgumentParser()
    streams.add_arguments(parser)
    for argv, says in ((["--modes", "foo"], "no mode foo; the modes are landmarks, video"),
                       (["--counts", "x"], "argument --counts: 'x'")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert parser.parse_args([]).modes == ["landmarks", "video"]


def test_a_run_that_measured_nothing_fails_and_keeps_the_report(monkeypatch, tmp_path, capsys) -> None:
    """Every stream refused (a wrong --url): exit 0 and a report of zeros written over --markdown, which read
    as "the box holds no stream"; then exit 1, but results of zeros still replaced the last run's --out."""
    import argparse

    async def refused(url, key, rec, age_group):
        raise ConnectionRefusedError("Connect call failed")

    monkeypatch.setattr(streams, "one_stream", refused)
    monkeypatch.setattr(streams, "recording", lambda mode, seconds: None)
    report, results = tmp_path / "STREAMS.md", tmp_path / "results.json"
    report.write_text("the last real run\n")
    results.write_text('{"results": "the last real run"}')
    parser = argparse.ArgumentParser()
    streams.add_arguments(parser)
    argv = [
        "--url",
        "http://127.0.0.1:1",
        "--modes",
        "landmarks",
        "--counts",
        "1,2",
        "--markdown",
        str(report),
        "--out",
        str(results),
    ]
    assert streams.run(parser.parse_args(argv)) == 1
    assert report.read_text() == "the last real run\n"
    assert results.read_text() == '{"results": "the last real run"}'
    err = capsys.readouterr().err
    assert "nothing measured for landmarks (1 streams failed (ConnectionRefusedError" in err
    assert err.rstrip().endswith(f"; {results} and {report} not written")


def test_a_run_one_of_whose_modes_measured_nothing_fails_and_writes_its_results(monkeypatch, tmp_path):
    """Video streams refused, landmark streams measured: the results (the refused mode's errors beside the
    measured mode's steps) are written, the report is not, and the run fails."""
    import argparse

    async def one_stream(url, key, rec, age_group):
        if rec == "video":
            raise ConnectionRefusedError("Connect call failed")
        return {"client_lag": [0.05], "server_lag": [0.04], "errors": [], "close": 1000}

    monkeypatch.setattr(streams, "one_stream", one_stream)
    monkeypatch.setattr(streams, "recording", lambda mode, seconds: mode)
    report, results = tmp_path / "STREAMS.md", tmp_path / "results.json"
    report.write_text("the last real run\n")
    parser = argparse.ArgumentParser()
    streams.add_arguments(parser)
    argv = ["--url", "http://127.0.0.1:1", "--modes", "landmarks,video", "--counts", "1"]
    assert streams.run(parser.parse_args([*argv, "--markdown", str(report), "--out", str(results)])) == 1
    assert report.read_text() == "the last real run\n"
    written = {r["mode"]: r for r in json.loads(results.read_text())["results"]}
    assert written["landmarks"]["steps"][0]["windows"] and not written["video"]["steps"][0]["windows"]
