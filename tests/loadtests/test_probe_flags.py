"""Every number a load-test command or probe takes is checked when parsed, with the flag named, before a clip
is built or a server started: most took a plain int or float, so 0, a negative or NaN started the run
(minutes of Triton or Ray) to measure nothing, divide by zero, or never end (locust reads a zero run time as
no limit); the few probes that checked some after parsing now share the same types."""

from __future__ import annotations

import argparse
import importlib

import pytest

from cli.main import main as avpenet


class Parsed(BaseException):
    """Raised once a parser has accepted its arguments: the case was not refused when parsed."""


@pytest.fixture(autouse=True)
def stop_after_parsing(monkeypatch):
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *args, **kwargs):
        parse(self, *args, **kwargs)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)


PROBES = [
    ("arenas", ["--rounds", "0"], "is not a whole number of 1 or more"),
    ("checkpoint_cpu", ["--streams", "-1"], "is not a whole number of 1 or more"),
    ("checkpoint_cpu", ["--seconds", "0"], "is not a whole number of 1 or more"),
    ("device_stage", ["--seconds", "nan"], "is not a number above 0"),
    ("gateway_cpu", ["--concurrency", "0"], "is not a whole number of 1 or more"),
    ("gateway_cpu", ["--requests", "-5"], "is not a whole number of 1 or more"),
    ("gateway_upload_memory", ["--mb", "0"], "is not a whole number of 1 or more"),
    ("gateway_upload_memory", ["--rate", "-16000"], "is not a whole number of 1 or more"),
    ("gateway_upload_memory", ["--channels", "0"], "is not a whole number of 1 or more"),
    ("queue_stall", ["--rates", "10,-3"], "is not a number above 0"),
    ("queue_stall", ["--seconds", "inf"], "is not a number above 0"),
    ("router_queue", ["--slots", "0"], "is not a whole number of 1 or more"),
    ("router_queue", ["--work-ms", "-1"], "is not a number of 0 or more"),
    ("router_queue", ["--payload-kb", "-1"], "is not a whole number of 0 or more"),
    ("sdk_upload_memory", ["--mb", "-1"], "is not a whole number of 1 or more"),
    ("stream_gap", ["--minutes", "0"], "is not a number above 0"),
    ("track_stride", ["--data", "d", "--out", "o", "--stride", "0"], "is not a whole number of 1 or more"),
    ("track_stride", ["--data", "d", "--out", "o", "--cpu-clips", "-1"], "whole number of 0 or more"),
    ("tracking_cpu", ["--clips", "0"], "is not a whole number of 1 or more"),
    ("triton_cpu", ["--threads", "0,-1"], "is not a whole number of 0 or more"),
    ("triton_cpu", ["--concurrency", "1,0"], "is not a whole number of 1 or more"),
    ("triton_cpu", ["--windows", "0"], "is not a whole number of 1 or more"),
    ("triton_cpu", ["--windows", "65"], "a request holds at most 64"),
    ("triton_gpu", ["--concurrency", "x"], "is not a whole number of 1 or more"),
    ("triton_gpu", ["--seconds", "-10"], "is not a number above 0"),
]


@pytest.mark.parametrize(("module", "argv", "says"), PROBES)
def test_a_probe_refuses_a_bad_number_when_parsed(module, argv, says, capsys):
    probe = importlib.import_module(f"loadtests.{module}")
    with pytest.raises(SystemExit) as exit_:
        probe.main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["loadtest", "--duration", "0s"], "'0s' is not a run time above 0"),
        (["loadtest", "--duration", "1.5m"], "'1.5m' is not a run time above 0"),
        (["loadtest", "--slo-p99-ms", "-1"], "is not a number above 0"),
        (["loadtest", "--slo-error-ratio", "2"], "is not a share from 0 to 1"),
        (["soak", "--duration", "ten minutes"], "is not a run time above 0"),
        (["soak", "--warmup", "-60"], "is not a number of 0 or more"),
        (["soak", "--sample-s", "0"], "is not a number above 0"),
        (["soak", "--max-slope", "nan"], "is not a number of 0 or more"),
        (["soak", "--memprofile", "-1"], "is not a number of 0 or more"),
    ],
)
def test_loadtest_and_soak_refuse_a_bad_run_time_or_bound_when_parsed(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        avpenet(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("duration", ["90", "30s", "10m", "1h30m", "2h"])
def test_the_run_times_locust_takes_are_kept_as_given(duration):
    from loadtests.run import run_time

    assert run_time(duration) == duration
    with pytest.raises(Parsed):  # and the whole command line parses
        avpenet(["loadtest", "--duration", duration])
