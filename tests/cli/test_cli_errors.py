"""What a user gets wrong ends in one line naming it and exit code 2, not a traceback (cli/main.py), and no
command writes or starts anything first. No server is needed: every case is refused before one is reached."""

from __future__ import annotations

import json

import pytest

from cli.main import main


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return code, err


@pytest.fixture()
def wav(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF0000WAVE")  # never sent: every case is refused before a request
    return path


def test_a_gateway_url_without_its_scheme_or_with_one_for_grpc(wav, capsys):
    code, err = run(["score", str(wav), "--url", "127.0.0.1:8080"], capsys)
    assert code == 2 and "http(s)://host:port" in err and "--grpc" in err
    code, err = run(["score", str(wav), "--grpc", "--url", "http://127.0.0.1:9090"], capsys)
    assert code == 2 and "host:port" in err


def test_a_grpc_target_without_its_port_is_refused_before_a_request(wav, capsys):
    """`score --grpc --url gateway.example.org` was sent to port 443 (grpcio's default), where no plain-text
    gateway listens: a retried UNAVAILABLE row instead of the form to give."""
    code, err = run(["score", str(wav), "--grpc", "--url", "gateway.example.org", "--retries", "0"], capsys)
    assert code == 2 and "--url gateway.example.org: no port: give host:port (e.g. 127.0.0.1:9090)" in err


def test_two_files_for_one_part_are_refused_not_silently_replaced(wav, tmp_path, capsys):
    other = tmp_path / "b.wav"
    other.write_bytes(wav.read_bytes())
    code, err = run(["score", str(wav), str(other), "--together", "--url", "http://127.0.0.1:9"], capsys)
    assert code == 2 and "a.wav and b.wav would both be the audio part" in err


def test_an_aac_recording_is_sent_as_the_audio_part_not_as_a_clip(wav, tmp_path, capsys):
    aac = tmp_path / "b.aac"  # ADTS AAC, as Android and many recorders write: sound alone
    aac.write_bytes(b"\xff\xf1\x50\x80")
    code, err = run(["score", str(wav), str(aac), "--together", "--url", "http://127.0.0.1:9"], capsys)
    assert code == 2 and "a.wav and b.aac would both be the audio part" in err


@pytest.mark.parametrize("name", ["b.aif", "b.AIFF", "b.aifc", "b.caf", "b.w64", "b.amr"])
def test_apple_wave64_and_amr_recordings_are_sent_as_the_audio_part(wav, tmp_path, capsys, name):
    other = tmp_path / name  # was sent as a clip, which the gateway refuses for a sound file
    other.write_bytes(b"FORM")
    code, err = run(["score", str(wav), str(other), "--together", "--url", "http://127.0.0.1:9"], capsys)
    assert code == 2 and f"a.wav and {name} would both be the audio part" in err


def test_a_folder_given_to_score_is_called_a_folder(tmp_path, capsys):
    """`avpenet score examples` said "no such file: examples"."""
    code, err = run(["score", str(tmp_path), "--url", "http://127.0.0.1:9"], capsys)
    assert code == 2 and f"{tmp_path} is a folder: give the clips in it, e.g. {tmp_path}/*.wav" in err


def test_an_unreachable_grpc_gateway_is_named(wav, capsys):
    code, err = run(["score", str(wav), "--grpc", "--url", "127.0.0.1:9", "--retries", "0"], capsys)
    assert code == 1 and "cannot reach the gateway at 127.0.0.1:9" in err


def test_a_folder_or_a_file_of_another_kind_is_named(tmp_path, capsys):
    code, err = run(["monitor", str(tmp_path)], capsys)
    assert code == 2 and f"Is a directory: {tmp_path}" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("not media")
    code, err = run(["monitor", str(notes)], capsys)
    assert code == 2 and "unsupported audio type" in err
    code, err = run(["evaluate", "--data", str(tmp_path / "none"), "--json", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err  # checked before any scoring


def test_monitor_alert_settings_the_gateway_would_refuse_are_refused_before_streaming(wav, capsys):
    """They were sent, and the gateway refused the stream at its start; now the same model checks them
    first (the recording is never read: `wav` is not one)."""
    for flags, says in (
        (["--threshold", "12"], "--threshold 12.0: Input should be less than or equal to 10"),
        (["--scale", "nips", "--threshold", "7"], "threshold 7 can never be exceeded on the nips scale"),
        (["--windows", "0"], "--windows 0: Input should be greater than or equal to 1"),
        (["--baseline-s", "-1"], "--baseline-s -1.0: Input should be greater than or equal to 0"),
    ):
        code, err = run(["monitor", str(wav), "--url", "http://127.0.0.1:9", *flags], capsys)
        assert code == 2 and says in err, err


def test_out_of_range_flags_are_refused_when_parsed(tmp_path, capsys):
    for argv in (
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--threads", "0"],
        *(
            ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), flag, value]
            for flag, value in (
                ("--lr", "-1e-4"),
                ("--lr", "nan"),
                ("--weight-decay", "-0.1"),
                ("--drop-face", "1.5"),
                ("--modality-loss", "nan"),
                ("--patience", "0"),
                ("--max-minutes", "0"),
            )
        ),
        ["export", "--keep", "0", "--repo", str(tmp_path / "repo")],
        ["quantize", "--data", str(tmp_path), "--rounds", "0", "--repo", str(tmp_path / "repo")],
        ["monitor", str(tmp_path), "--handling", "5-10"],
        ["synth", "--out", str(tmp_path / "synth"), "--workers", "0"],
        ["synth", "--out", str(tmp_path / "synth"), "--subjects", "-1"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert not any((tmp_path / name).exists() for name in ("run", "repo", "synth"))


def test_bench_rerender_of_something_else_and_no_write(tmp_path, capsys):
    bogus = tmp_path / "b.json"
    bogus.write_text("{}")
    code, err = run(["bench", "--from-json", str(bogus)], capsys)
    assert code == 2 and "is not a saved bench run" in err
    from loadtests.bench import RAW

    out = tmp_path / "B.md"
    assert main(["bench", "--from-json", str(RAW), "--markdown", str(out), "--no-write"]) == 0
    assert not out.exists()  # the committed run re-renders, and --no-write prints only


def test_synth_into_a_folder_holding_another_dataset_is_refused(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("clip_id\n")
    code, err = run(["synth", "--out", str(tmp_path), "--subjects", "1", "--render-video", "0"], capsys)
    assert code == 2 and "already holds files" in err and "--resume" in err


def test_a_split_file_that_is_not_json_is_named(tmp_path, capsys):
    bad = tmp_path / "split.json"
    bad.write_text("not json")
    out = tmp_path / "out"
    code, err = run(
        ["synth", "--out", str(out), "--subjects", "3", "--parts", "test", "--split", str(bad)], capsys
    )
    assert code == 2 and f"{bad} is not a split.json" in err


def test_avpenet_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("AVPENET_DEBUG", "1")
    with pytest.raises(IsADirectoryError):
        main(["monitor", str(tmp_path)])


def test_calibrate_names_what_the_data_folder_lacks(tmp_path, capsys):
    from avpenet.model import REFERENCE_DIR

    out = tmp_path / "new"
    base = ["calibrate", "--checkpoint", str(REFERENCE_DIR), "--out", str(out), "--quiet", "--data"]
    code, err = run([*base, str(tmp_path)], capsys)
    assert code == 2 and f"--data {tmp_path} is not a dataset: it has no labels.csv" in err
    assert "split.json" not in err  # the folder the user gave, not a file we looked for in it
    (tmp_path / "labels.csv").write_text("clip_id,subject_id,age_group,score\n")  # not the run's data
    code, err = run([*base, str(tmp_path)], capsys)
    assert code == 2 and f"--data {tmp_path} has no split.json" in err and "give --split" in err
    assert not out.exists()


@pytest.fixture()
def few_clips(tmp_path):
    """A real AVPE-Synth set of 3 one-clip subjects (no renders: about a second)."""
    from avpenet.synth import dataset

    out = tmp_path / "few"
    dataset.generate(out, seed=3, n_subjects=3, n_clips=3, render=0, workers=1, progress=False)
    return out


def test_quantize_refuses_an_empty_calibration_set(few_clips, tmp_path, capsys):
    from ensemble.quantize import CALIBRATION_BATCH

    empty, repo = _empty_dataset(tmp_path / "empty"), tmp_path / "repo"
    code, err = run(["quantize", "--data", str(empty), "--repo", str(repo)], capsys)
    assert code == 2 and f"--data {empty} has no clips to calibrate on" in err
    # too few windows for one calibration batch: refused before a part is quantised, not onnxruntime's words
    code, err = run(["quantize", "--data", str(few_clips), "--clips", "1", "--repo", str(repo)], capsys)
    assert code == 2 and f"takes {CALIBRATION_BATCH} or more: raise --clips" in err
    assert not repo.exists()


def test_quantize_exits_2_on_an_unknown_part(tmp_path, capsys):
    repo = tmp_path / "repo"
    argv = ["quantize", "--data", str(tmp_path), "--parts", "fusion,vocoder", "--repo", str(repo)]
    code, err = run(argv, capsys)
    assert code == 2 and "--parts: cannot quantise vocoder" in err and not repo.exists()


def test_a_failed_train_leaves_no_folder_it_made_and_keeps_the_users(tmp_path, capsys):
    missing = str(tmp_path / "no-data")
    code, err = run(["train", "--data", missing, "--out", str(tmp_path / "runs" / "a")], capsys)
    assert code == 2 and "labels.csv" in err
    assert not (tmp_path / "runs").exists()  # a retry finds no half-made run folder
    empty, notes = tmp_path / "empty", tmp_path / "mine" / "notes.txt"
    empty.mkdir()
    notes.parent.mkdir()
    notes.write_text("keep")
    for out in (empty, notes.parent):  # folders the user had, and what is in them, are left alone
        assert run(["train", "--data", missing, "--out", str(out)], capsys)[0] == 2
    assert empty.is_dir() and notes.read_text() == "keep"


def test_train_refuses_an_out_folder_holding_a_run_unless_forced(tmp_path, capsys):
    """A second `train --out RUN` silently replaced RUN's model.pt and its split.json (another test set),
    even after RUN was exported; now it is refused before anything is read, and --force gets past it."""
    run_dir = tmp_path / "RUN"
    run_dir.mkdir()
    held = {"model.pt": b"the exported run", "split.json": b'{"test": ["S0001"]}'}
    for name, content in held.items():
        (run_dir / name).write_bytes(content)
    missing = str(tmp_path / "no-data")  # read only once the folder is accepted
    code, err = run(["train", "--data", missing, "--out", str(run_dir)], capsys)
    assert code == 2 and f"avpenet train: --out {run_dir} already holds a run (model.pt)" in err
    assert "--force" in err and "labels.csv" not in err
    assert {name: (run_dir / name).read_bytes() for name in held} == held
    code, err = run(["train", "--data", missing, "--out", str(run_dir), "--force"], capsys)
    assert code == 2 and "labels.csv" in err  # past the check: the data is read


def test_train_never_replaces_the_committed_reference_or_its_init_run(tmp_path, capsys):
    """`train --out avpenet/reference --force` (or --out equal to --init) replaced the committed reference
    or the run being fine-tuned: refused, forced or not, before anything is read."""
    from avpenet.model import REFERENCE_DIR

    missing = str(tmp_path / "no-data")
    init = tmp_path / "RUN"
    (init / "audio_only").mkdir(parents=True)
    cases = [
        (["--out", str(REFERENCE_DIR)], "is the committed reference run"),
        (["--out", str(REFERENCE_DIR / "audio_only")], "is the committed reference run"),
        (["--out", "avpenet/../avpenet/reference"], "is the committed reference run"),
        (["--init", str(init), "--out", str(init)], "is or holds the --init run"),
        (["--init", str(init / "audio_only"), "--out", str(init)], "is or holds the --init run"),
    ]
    for out, message in cases:
        for force in ([], ["--force"]):
            code, err = run(["train", "--data", missing, *out, *force], capsys)
            assert code == 2 and message in err and "labels.csv" not in err, (out, err)
    assert (init / "audio_only").is_dir()


def _split(tmp_path, **parts: list[str]) -> str:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [], "val": [], "test": [], **parts}))
    return str(path)


def _empty_dataset(path):
    from avpenet import contract

    path.mkdir()
    (path / "labels.csv").write_text(",".join(contract.LABEL_COLUMNS) + "\n")
    return path


def test_data_that_cannot_serve_train_or_evaluate_is_a_user_error(few_clips, tmp_path, capsys):
    """Not SystemExit's exit 1, which scripts read as a crash: too few subjects, no clips of a part."""
    out = tmp_path / "run"
    argv = ["train", "--data", str(few_clips), "--out", str(out), "--quiet"]
    code, err = run(argv, capsys)
    assert code == 2 and "avpenet train: too few subjects for a subject-independent split" in err
    code, err = run([*argv, "--split", _split(tmp_path, train=["S0001"], val=["nobody"])], capsys)
    assert code == 2 and "avpenet train: need training and validation clips; got 1 and 0" in err
    assert not out.exists()
    argv = ["evaluate", "--data", str(few_clips), "--json", str(tmp_path / "e.json"), "--quiet", "--split"]
    code, err = run([*argv, _split(tmp_path, test=["nobody"])], capsys)
    assert code == 2 and f"avpenet evaluate: no clips of the test subjects in {few_clips}" in err


def test_calibrate_refusals_are_user_errors_printed_once(few_clips, tmp_path, capsys):
    from avpenet.model import REFERENCE_DIR

    out = tmp_path / "new"
    base = ["calibrate", "--checkpoint", str(REFERENCE_DIR), "--data", str(few_clips), "--out", str(out)]
    base += ["--quiet", "--split"]
    code, err = run([*base, _split(tmp_path, val=["nobody"])], capsys)
    assert code == 2 and "avpenet calibrate: no clips of the validation subjects of" in err
    split = _split(tmp_path, val=["S0002"])
    code, err = run([*base, split, "--add", str(few_clips)], capsys)
    assert code == 2 and f"avpenet calibrate: --add {few_clips} has the labels of the --data set" in err
    empty = _empty_dataset(tmp_path / "empty")
    code, err = run([*base, split, "--add", str(empty)], capsys)
    assert code == 2 and err == f"avpenet calibrate: --add {empty} has no clips\n"  # the prefix once
    assert not out.exists()


def test_precision_measure_refuses_no_clips_before_numpy_does(few_clips, tmp_path, capsys):
    from ensemble import precision_measure

    for argv in (["--clips", "0"], ["--rounds", "0"]):
        with pytest.raises(SystemExit) as exit_:
            precision_measure.main(["--choose", "fusion=int8", "--data", str(few_clips), *argv])
        assert exit_.value.code == 2
    assert "argument --clips: '0' is not a whole number of 1 or more" in capsys.readouterr().err
    assert precision_measure.main(["--choose", "fusion=fp64", "--data", str(few_clips)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("precision_measure: --choose: {'fusion': 'fp64'}") and err.count("\n") == 1
    empty = _empty_dataset(tmp_path / "empty")
    assert precision_measure.main(["--choose", "fusion=int8", "--data", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"precision_measure: --data {empty} has no clips to calibrate on")
    assert err.count("\n") == 1  # one line, no traceback
    # an --evaluate set without MP4s: refused before any timing (the repo given does not even exist)
    missing = tmp_path / "no-repo"
    argv = ["--choose", "fusion=int8", "--data", str(few_clips), "--evaluate", str(few_clips)]
    assert precision_measure.main([*argv, "--repo", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--evaluate {few_clips} has no video clips of the test subjects" in err
    assert "--render-video all" in err
    quantize = ["quantize", "--data", str(few_clips), "--evaluate", str(few_clips), "--repo", str(missing)]
    code, err = run(quantize, capsys)
    assert code == 2 and "has no video clips of the test subjects" in err and not missing.exists()


def test_the_precision_tool_reports_a_user_error_as_avpenet_does(tmp_path, capsys):
    """`python -m ensemble.precision_measure` shares the one-line report: a missing file is named."""
    from ensemble import precision_measure

    missing = tmp_path / "no-such-dataset"
    code = precision_measure.main(["--choose", "visual_encoder=int8", "--data", str(missing)])
    err = capsys.readouterr().err
    assert (
        code == 2 and err.startswith("precision_measure: No such file or directory: ") and str(missing) in err
    )
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def never_started(monkeypatch) -> None:
    """Triton and the stack fail the test if a command gets as far as starting them."""
    from ensemble import server
    from preprocess_service import stack

    def started(*args, **kwargs):
        raise AssertionError("started before checking its arguments")

    monkeypatch.setattr(stack, "LocalStack", started)
    monkeypatch.setattr(server, "TritonServer", started)
    # the session's gateway stack sets its keys in this process's environment while it runs (LocalStack):
    # a command here must see only what its test gives it, whichever test file ran first
    monkeypatch.delenv(stack.KEYS_ENV, raising=False)


def test_serve_and_triton_check_what_they_were_given_before_starting_anything(tmp_path, monkeypatch, capsys):
    """`serve --api-key-file /nonexistent` started Triton and Ray, Serve failed three times, then ~30 lines
    of Ray traceback and exit 1; a missing --config or --repo said one line but exited 1."""
    never_started(monkeypatch)
    (tmp_path / "empty.keys").write_text("# no key yet\n")
    (tmp_path / "bad.yaml").write_text("a: [")
    for argv, says in (
        (["serve", "--api-key-file", str(tmp_path / "none.keys")], "none.keys does not exist"),
        (["serve", "--api-key-file", str(tmp_path)], f"Is a directory: {tmp_path}"),
        (["serve", "--api-key-file", str(tmp_path / "empty.keys")], "holds no key"),
        (["serve", "--config", str(tmp_path / "none.yaml")], "none.yaml"),
        (["serve", "--config", str(tmp_path / "bad.yaml")], "bad.yaml is not YAML"),
        (["serve", "--repo", str(tmp_path / "repo")], "no such model repository"),
        (["triton", "--repo", str(tmp_path / "repo")], "no such model repository"),
        (["triton", "--repo", str(tmp_path)], "holds no model"),
    ):
        code, err = run(argv, capsys)
        assert code == 2 and says in err, (argv, err)


def test_an_empty_key_file_beside_keys_in_the_environment_is_not_refused(tmp_path, monkeypatch):
    """The gateway reads AVPENET_API_KEYS and the file together: an empty file is then no reason to stop."""
    never_started(monkeypatch)
    (tmp_path / "empty.keys").write_text("# rotated in later\n")
    monkeypatch.setenv("AVPENET_API_KEYS", "abc123")
    with pytest.raises(AssertionError, match="started before checking"):  # it went on to start the stack
        main(["serve", "--api-key-file", str(tmp_path / "empty.keys"), "--no-grpc"])


@pytest.mark.parametrize(
    "argv",
    [
        ["triton", "--http-port", "99999"],
        ["triton", "--metrics-port", "-1"],
        ["serve", "--grpc-port", "65536"],
        ["serve", "--http-port", "http"],
    ],
)
def test_a_port_out_of_range_is_refused_when_parsed(argv, capsys, monkeypatch):
    """`avpenet triton --http-port 99999` went on to log "Started HTTPService at 127.0.0.1:99999"."""
    never_started(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {argv[1]}: '{argv[2]}' is not a port (1-65535" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["bench", "--rounds", "0"], "is not a whole number of 1 or more"),
        (["bench", "--rounds", "-3"], "is not a whole number of 1 or more"),
        (["bench", "--max-replicas", "0"], "is not a whole number of 1 or more"),
        (["stream-bench", "--seconds", "0"], "is not a number of 3 seconds or more: a shorter stream is"),
        (["stream-bench", "--seconds", "2.5"], "is not a number of 3 seconds or more"),
        (["stream-bench", "--seconds", "nan"], "is not a number of 3 seconds or more"),
        (["triton", "--trace-rate", "0"], "is not a whole number of 1 or more"),
        (["triton", "--trace-rate", "-5"], "is not a whole number of 1 or more"),
        (["bench", "--measure-s", "0"], "is not a number above 0"),
        (["bench", "--measure-s", "-5"], "is not a number above 0"),
        (["bench", "--measure-s", "nan"], "is not a number above 0"),
        (["bench", "--parity-tol", "nan"], "is not a number above 0"),
        (["bench", "--parity-tol", "-1"], "is not a number above 0"),
        (["triton", "--log-verbose", "-1"], "is not a whole number of 0 or more"),
        (["triton", "--log-verbose", "1.5"], "is not a whole number of 0 or more"),
    ],
)
def test_bench_and_triton_counts_and_lengths_are_range_checked_when_parsed(argv, says, monkeypatch, capsys):
    """`bench --rounds 0` and `--max-replicas 0`, `stream-bench --seconds 0` (a stream shorter than one
    window) and `triton --trace-rate 0` were taken as given and failed, or measured nothing, after starting
    the stack, Triton or building clips; `bench --measure-s 0` silently measured the default length, -5 or
    nan no time (only until the minimum request count), `bench --parity-tol nan` passed every score (no
    difference is above NaN), and `triton --log-verbose -1` went to Triton."""
    from loadtests import clips

    def built(*args, **kwargs):
        raise AssertionError("clips built before the flags were checked")

    monkeypatch.setattr(clips, "build", built)
    never_started(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {argv[1]}: '{argv[2]}' {says}" in err


def test_bench_refuses_a_mix_of_several_kinds_naming_the_ones_it_runs(monkeypatch, capsys):
    """`bench --mixes ward --no-write --quick` built the clips, then failed "too many values to unpack
    (expected 1)": the bench measures one request kind per mix, and --help named only those."""
    from loadtests import bench, clips

    def built(*args, **kwargs):
        raise AssertionError("clips built before --mixes was checked")

    monkeypatch.setattr(clips, "build", built)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--mixes", "ward", "--no-write", "--quick"])
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and "argument --mixes: no mix ward in the bench; it runs model, long, video" in err
    )
    assert "`avpenet loadtest --mix` runs ward" in err
    assert bench.mix_list("video, model") == ["video", "model"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:notaport", "the port is not a number from 1 to 65535"),
        ("http://127.0.0.1:70000", "the port is not a number from 1 to 65535"),
        ("http://", "no host"),
        ("https://:8080", "no host"),
    ],
)
def test_a_url_without_a_host_or_with_a_bad_port_is_named_before_a_request(wav, capsys, url, says):
    """`--url http://127.0.0.1:notaport` sent nothing, then printed a row `error INCOMPLETE: the answer was
    cut off (InvalidURL)` and exited 1."""
    code, err = run(["score", str(wav), "--url", url, "--retries", "0"], capsys)
    assert code == 2 and f"--url {url}: {says}" in err
    if target := url.partition("//")[2]:  # the same address as a gRPC target (host:port)
        code, err = run(["score", str(wav), "--grpc", "--url", target, "--retries", "0"], capsys)
        assert code == 2 and says in err


def test_the_version_pin_examples_name_versions_the_repository_serves(capsys):
    """`score --help` offered `--pin avpenet=1,fusion=2`, refused 404 (fusion serves its newest version)."""
    import re

    from ensemble import DEFAULT_REPOSITORY, PROJECT_ROOT
    from preprocess_service import pinning

    with pytest.raises(SystemExit):
        main(["score", "--help"])
    texts = [capsys.readouterr().out, pinning.MALFORMED, (PROJECT_ROOT / "docs" / "openapi.json").read_text()]
    pins = [pin for text in texts for pin in re.findall(r"\b([a-z_]+)=(\d+)\b", text)]
    assert len(pins) >= 3
    for name, version in pins:  # version_policy latest 1: the newest version folder is the one served
        versions = [int(p.name) for p in (DEFAULT_REPOSITORY / name).iterdir() if p.name.isdigit()]
        assert int(version) == max(versions), (name, version, versions)


@pytest.mark.parametrize(
    "argv", [["--users", "-1"], ["--users", "0"], ["--spawn-rate", "0"], ["--max-replicas", "-2"]]
)
def test_loadtest_refuses_no_users_before_building_anything(argv, monkeypatch, capsys):
    """`avpenet loadtest --users -1` built the clips, started the stack and ran locust with -1 users."""
    from loadtests import clips

    def built(*args, **kwargs):
        raise AssertionError("clips built before the flags were checked")

    monkeypatch.setattr(clips, "build", built)
    never_started(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(["loadtest", *argv])
    assert exit_.value.code == 2 and f"argument {argv[0]}: '{argv[1]}' is not" in capsys.readouterr().err
