"""The bench's run mechanics: a cell's measured window (requests slower than it still give a rate, the long
mix), Triton's counters when Triton stops answering, and re-rendering a saved run with its notes."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from loadtests import bench


async def _slow_server(delay_s: float) -> tuple[web.AppRunner, str]:
    async def score(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay_s)
        return web.Response(text=json.dumps({"timeline": [{}], "timings_ms": {}}))

    app = web.Application()
    app.router.add_post("/score", score)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/score"


def _run(timing: bench.Timing, delay_s: float, concurrency: int) -> tuple[list[bench.Done], float]:
    async def main():
        runner, url = await _slow_server(delay_s)
        try:
            parts = [("audio", "a.wav", b"x", "audio/wav")]
            done, t0, t1, _, _ = await bench.closed_loop(url, parts, concurrency, timing, dict, dict)
            return done, t1 - t0
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_window_waits_for_the_minimum_requests_when_each_takes_longer_than_it():
    timing = bench.Timing(warmup_s=0.0, measure_s=0.2, warmup_max_s=0.1, min_requests=4, measure_max_s=30.0)
    done, seconds = _run(timing, delay_s=1.0, concurrency=2)
    assert len(done) >= 4 and all(d.ok for d in done)
    assert seconds > timing.measure_s  # extended past measure_s, not cut at it


def test_window_lasts_until_every_client_finished_its_rounds():
    timing = bench.Timing(
        warmup_s=0.0, measure_s=0.1, warmup_max_s=0.1, min_requests=1, measure_max_s=30.0, min_rounds=3.0
    )
    done, seconds = _run(timing, delay_s=0.3, concurrency=2)
    assert len(done) >= 6 and seconds > timing.measure_s


def test_the_default_window_holds_four_rounds_per_client_and_the_quick_one_does_not():
    assert bench.DEFAULT.requests_needed(32) == 128 and bench.DEFAULT.requests_needed(1) == 16
    assert bench.QUICK.requests_needed(32) == bench.QUICK.min_requests


def test_window_is_capped_when_the_minimum_never_arrives():
    timing = bench.Timing(warmup_s=0.0, measure_s=0.1, warmup_max_s=0.1, min_requests=1000, measure_max_s=0.5)
    done, seconds = _run(timing, delay_s=0.05, concurrency=2)
    assert len(done) < 1000 and seconds < 10.0


def test_rerendering_twice_keeps_one_copy_of_the_notes_file_and_drops_a_scratch_output_path(tmp_path):
    import argparse

    from loadtests import benchreport as br

    (tmp_path / "img").mkdir()
    saved = tmp_path / "img" / "bench.json"
    recorded = json.loads((bench.PROJECT_ROOT / "docs" / "img" / "bench.json").read_text())
    recorded["command"] = "avpenet bench --rounds 3 --markdown /tmp/scratch/B.md --mixes model"
    saved.write_text(json.dumps(recorded))
    notes_file = tmp_path / "notes.md"
    notes_file.write_text("First paragraph, measured elsewhere.\n\nSecond paragraph.\n")
    args = argparse.Namespace(
        from_json=saved, notes=notes_file, markdown=tmp_path / "BENCHMARKS.md", no_write=False
    )
    for _ in range(2):  # the second reads back what the first wrote
        assert bench._rerender(args) == 0
    report = br.report_from_dict(json.loads(saved.read_text()))
    assert report.notes.count("Second paragraph.") == 1
    assert report.notes[: len(bench.notes(report.cells))] == bench.notes(report.cells)
    assert report.command == "avpenet bench --rounds 3 --mixes model"  # the scratch path is not the report's
    assert "/tmp/scratch" not in (tmp_path / "BENCHMARKS.md").read_text()


def test_a_triton_that_stops_answering_leaves_the_cell_unmeasured_not_the_bench_aborted():
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on: Triton down
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
    assert bench.triton_counters(url) is None
    assert bench.triton_counters(None) == {}
    counters = {"fusion": {"nv_inference_count": 40.0}}
    assert bench.triton_delta(None, counters) == {} and bench.triton_delta(counters, None) == {}
    assert bench.triton_delta(counters, {"fusion": {"nv_inference_count": 46.0}}) == {
        "fusion": {"nv_inference_count": 6.0}
    }
    restarted = {"fusion": {"nv_inference_count": 3.0}}  # counters began again from zero
    assert bench.triton_delta(counters, restarted) == {}
