"""The soak's code against the real stack (the session gateway: Triton, its stubs, Ray Serve), for a short
bounded run: locust load over HTTP and gRPC, RSS sampled per stack process, slopes fitted after warm-up.
The hour-long run with the real bound is `make soak` (docs/RELIABILITY.md)."""

from __future__ import annotations

import argparse
import contextlib
import csv

import psutil
import pytest
from support.gateway import API_KEY

from loadtests import soak

JUDGED = ("tritonserver", "stub:", "raylet", "gcs_server", "ServeReplica", "ServeController", "ProxyActor")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_slope_flags_a_steady_climb_not_warm_up_or_small_processes():
    minutes = range(0, 61)
    series = {
        "leaking[1]": [(m * 60.0, 1000.0 + 4.0 * m) for m in minutes],  # +0.4%/min, the old creep
        "settling[2]": [(m * 60.0, 800.0 + (300.0 if m >= 5 else 60.0 * m)) for m in minutes],  # warm-up only
        "tiny[3]": [(m * 60.0, 5.0 + 0.05 * m) for m in minutes],  # 1%/min of 5 MB: not judged
        "step[5]": [(m * 60.0, 250.0 + (10.0 if m >= 40 else 0.0)) for m in minutes],  # one step, then flat
        "hump[6]": [(m * 60.0, 120.0 + 30.0 - abs(m - 40) * 1.5) for m in minutes],  # up, given back
    }
    table = soak.slopes(series, warmup_s=300)
    assert table["leaking[1]"][2] > 0.3 and abs(table["settling[2]"][2]) < 1e-9
    assert table["step[5]"][2] > soak.MAX_SLOPE_PCT_PER_MIN  # what one slope over the hour would fail
    misses = soak.verdict(table, soak.MAX_SLOPE_PCT_PER_MIN)
    assert len(misses) == 1 and misses[0].startswith("leaking[1]")
    assert soak.slopes({"short[4]": [(0.0, 1.0), (400.0, 2.0)]}, warmup_s=300) == {}


@pytest.mark.integration
def test_short_soak_against_the_real_stack(gateway_stack, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVPENET_API_KEY", API_KEY)
    args = _args(
        "--url", gateway_stack.http_url, "--grpc-target", gateway_stack.grpc_target,
        "--duration", "40s", "--users", "2", "--mix", "video", "--warmup", "10", "--sample-s", "2",
        "--max-slope", "100", "--slo-p99-ms", "120000", "--out", str(tmp_path),
    )  # fmt: skip
    code = soak.run(args)
    out = capsys.readouterr().out
    assert code == 0, out
    with open(tmp_path / "soak_rss.csv") as fh:
        names = {row["process"].split("[")[0] for row in csv.DictReader(fh)}
    # every part of the stack is measured, process by process; the load generator is not
    assert {"tritonserver", "stack total"} <= names, names
    assert {"stub:audio_frontend", "stub:audio_encoder", "stub:visual_encoder", "stub:fusion"} <= names
    assert any("ServeReplica:avpenet:Gateway" in n for n in names), names
    assert any("ServeReplica:avpenet:FeatureExtractor" in n for n in names), names
    assert not any("locust" in n for n in names)
    assert "slope %/min" in out and "stack total" in out


@pytest.mark.integration
def test_every_stack_process_runs_with_bounded_malloc_arenas(gateway_stack):
    """The fix of the soak's native creep is in the launcher: Triton, its stubs, Ray's raylet and GCS and
    every Serve actor (replicas, proxies, controller) start with ALLOCATOR_ENV. Ray's two agents are left
    out: their retitling overwrites the environment block /proc shows, so it cannot be read back."""
    from ensemble.server import ALLOCATOR_ENV

    environs = {}
    for proc in soak.stack_processes():
        name = soak.label(proc)
        if not any(part in name for part in JUDGED):
            continue
        with contextlib.suppress(psutil.Error):  # a Ray helper may exit between listing and reading
            environs[name] = proc.environ()
    assert any(n.startswith("tritonserver") for n in environs) and any("ServeReplica" in n for n in environs)
    missing = [n for n, env in environs.items() if any(env.get(k) != v for k, v in ALLOCATOR_ENV.items())]
    assert not missing, f"started without {ALLOCATOR_ENV}: {missing}"
