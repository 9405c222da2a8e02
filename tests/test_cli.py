"""The command shell: help text, --quiet, one-line errors, summaries in a log, and the options each command hands
its pipeline. The pipelines are replaced by stand-ins that record their options, so these tests run in seconds."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from faceattr_batch import progress, summaries
from faceattr_batch.cli import app
from faceattr_batch.cli_base import int_tuple
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models import export
from faceattr_batch.pipelines import crop, ensemble, fid, import_csv, index, predict, report, synth, train, train_gen

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # cli_train's commands are merged in: not registered_commands


@pytest.fixture(autouse=True)
def _loud():
    """--quiet is process-wide (progress.set_quiet); every test starts and ends without it."""
    progress.set_quiet(False)
    yield
    progress.set_quiet(False)


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # the formatter wraps to the width; compare the words


# --- help ---------------------------------------------------------------------------------------------------------


def test_every_command_is_listed_with_its_help():
    assert COMMANDS == sorted(
        ["crop", "ensemble", "export-onnx", "fid", "import-csv", "index", "predict", "report", "synth", "train",
         "train-gen"]
    )  # fmt: skip


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["(root)", *COMMANDS])
def test_help_reads_like_a_cli(command):
    """No Python types (<bool>, <int range>, list[str]) and no {folder} in the usage line (typer 0.29's rich help
    showed both); flags stand bare."""
    text = _help(*command)
    assert not re.search(r"<[a-z][^>]*>", text), text  # <bool>, <path>, <int range>, <list[str]>
    assert "list[str]" not in text and "{" not in text, text
    assert "--help Show this message and exit." in text
    if not command:
        assert "--quiet" in text and "--version Print the version" in text


def test_help_names_arguments_and_shows_defaults():
    assert "Usage: faceattr-batch index [OPTIONS] FOLDER Parse" in _help("index")
    assert "Usage: faceattr-batch fid [OPTIONS] REAL [FAKE] " in _help("fid")
    text = _help("predict")
    assert "Usage: faceattr-batch predict [OPTIONS] INPUTS... " in text
    assert "-m, --model TEXT" in text and "[default: (the shipped ensemble)]" in text
    assert "[default: (half the cores; all with a GPU); x>=0]" in text  # --workers
    assert "[default: (all cores on the CPU, 1 on a GPU); x>=1]" in text  # --threads, as split_cores gives them
    assert "one face chip. The same on both engines. [default: auto]" in text  # --faces
    assert "--resume Continue" in text and "--hash" not in text
    assert "--file-sizes / --no-file-sizes" in _help("index")
    assert "--resize-to INTEGER" in _help("fid")
    assert "--resolution INTEGER" in _help("synth")


# What each command hands its work to: an options dataclass, or a function's keyword arguments. The CLI repeats the
# defaults as literals (importing a pipeline at start would load torch), so a default changed on one side only would
# make the API and the CLI disagree.
DEFAULTS_OF_COMMAND = {
    "index": index.IndexOptions,
    "import-csv": import_csv.ImportCsvOptions,
    "fid": fid.FidOptions,
    "predict": predict.PredictOptions,
    "report": report.build,
    "crop": crop.CropOptions,
    "synth": synth.SynthOptions,
    "train": train.TrainOptions,
    "ensemble": ensemble.EnsembleOptions,
    "export-onnx": export.export_onnx,
    "train-gen": train_gen.TrainGenOptions,
}
CLI_ONLY_DEFAULTS = {("predict", "faces")}  # the CLI detects faces in photos (auto); the API reads chips unless asked


def _api_defaults(target) -> dict:
    if dataclasses.is_dataclass(target):
        return {f.name: f.default for f in dataclasses.fields(target) if f.default is not dataclasses.MISSING}
    parameters = inspect.signature(target).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def test_cli_defaults_match_the_api_defaults():
    commands = typer.main.get_command(app).commands
    assert set(DEFAULTS_OF_COMMAND) == set(commands)  # a new command joins the map
    compared = 0
    for name, target in DEFAULTS_OF_COMMAND.items():
        defaults = _api_defaults(target)
        for param in commands[name].params:
            if param.name not in defaults or (name, param.name) in CLI_ONLY_DEFAULTS:
                continue
            cli_default = param.default
            if isinstance(cli_default, str) and isinstance(defaults[param.name], tuple):  # --widths 32,64,128,256
                cli_default = int_tuple(cli_default, param.name)
            elif cli_default is None and defaults[param.name] == ():  # a repeatable flag not given
                cli_default = ()
            assert cli_default == defaults[param.name], f"{name} --{param.name}"
            compared += 1
    assert compared > 60  # the map reaches every command's flags, not a handful


def test_predict_help_quotes_no_speed_ratio():
    """It said the fast model was 'about 3x' faster while the README said 6x (issue 17, item 11)."""
    text = _help("predict")
    assert not re.search(r"\d\s*[x×]\b", text.replace("x>=", "")), text


# --- --quiet and the summary ----------------------------------------------------------------------------------------


def _predict_result(output: Path) -> SimpleNamespace:
    metrics = {"n_gender": 20, "n_race": 20, "n_age": 20, "gender_accuracy": 0.9, "race_accuracy": 0.8, "age_mae": 5.0}
    return SimpleNamespace(
        output=output,
        images=21,
        predicted=20,
        errors={"unreadable image": 1},
        labelled=21,  # the error row has labels from its name, no prediction
        metrics=metrics,
        model={"name": "attr", "version": "1", "runtime": "onnxruntime"},
        settings={"workers": 1, "device": "cpu", "labels": "names", "faces": "auto"},
        seconds=5.5,
        processed=100,
        shards_skipped=0,
        report=None,
        labels=None,
        training=None,
        images_per_second=18.2,
        to_dict=lambda: {"images": 21},
    )


@pytest.fixture
def fake_predict(monkeypatch, tmp_path):
    """predict.run replaced: records its options and whether --quiet was on, draws a bar, returns a result."""
    seen = {}

    def run(options):
        seen.update(options=options, quiet=progress.is_quiet())
        for _ in progress.progress_bar(range(3), total=3, desc="predict"):
            pass
        return _predict_result(Path(options.output))

    monkeypatch.setattr(predict, "run", run)
    return seen


def test_quiet_silences_bars_and_summary_but_not_json(fake_predict, tmp_path):
    out = str(tmp_path / "p.parquet")
    loud = runner.invoke(app, ["predict", "x.jpg", "-o", out])
    assert loud.exit_code == 0 and "21 images ->" in loud.stdout and "predict" in loud.stderr
    quiet = runner.invoke(app, ["--quiet", "predict", "x.jpg", "-o", out])
    assert quiet.exit_code == 0, quiet.output
    assert fake_predict["quiet"] and quiet.stdout == "" and quiet.stderr == ""
    scripted = runner.invoke(app, ["-q", "predict", "x.jpg", "-o", out, "--json"])
    assert scripted.stdout.strip() == '{\n  "images": 21\n}'
    again = runner.invoke(app, ["predict", "x.jpg", "-o", out])  # --quiet does not outlive its command
    assert "21 images ->" in again.stdout and not fake_predict["quiet"]


def test_summary_in_a_log_is_not_wrapped(fake_predict, tmp_path):
    """stdout is not a terminal here: the 120-odd-character first line stays one line (it was cut at 80 columns,
    '100 processed\\nin 5.5 s')."""
    result = runner.invoke(app, ["predict", "x.jpg", "-o", str(tmp_path / "a-long-name-for-the-predictions.parquet")])
    first = result.stdout.splitlines()[0]
    assert len(first) > 100 and first.endswith("100 processed in 5.5 s, 18 images/s; 0 shards resumed)"), first


def test_summary_prints_brackets_in_paths_as_they_are(fake_predict, tmp_path):
    """Paths are not rich markup: "[draft]" kept its brackets only by luck of style names, and "[/c]" raised a
    MarkupError after the whole run had been written."""
    out = tmp_path / "[draft]" / "[" / "c]" / "p.parquet"
    result = runner.invoke(app, ["predict", "x.jpg", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"21 images -> {out}  (20 faces predicted" in result.stdout


def test_metrics_header_counts_what_the_rows_count(fake_predict, tmp_path):
    """21 labelled rows, one an error: the rows say n = 20, so does the title (it said 21; issue 17, item 9)."""
    result = runner.invoke(app, ["predict", "x.jpg", "-o", str(tmp_path / "p.parquet")])
    assert "metrics over 20 labelled faces" in result.stdout and "21 labelled" not in result.stdout
    assert re.search(r"gender\W+20\W+acc 90.0%", result.stdout)
    uneven = summaries.headline_metrics({"n_gender": 20, "n_race": 19, "n_age": 20})
    assert uneven.title == "metrics over labelled faces"


def test_ray_keeps_the_faces_default(fake_predict, tmp_path):
    """--engine ray used to switch --faces to chips: the same command, different rows (issue 17, item 12)."""
    runner.invoke(app, ["predict", "x.jpg", "-o", str(tmp_path / "p.parquet"), "--engine", "ray"])
    assert fake_predict["options"].faces == "auto" and fake_predict["options"].engine == "ray"


def test_predict_options_reach_the_pipeline(fake_predict, tmp_path):
    args = ["predict", "a", "b", "-o", "p.parquet", "--report", "r", "-w", "0", "--threads", "3", "--min-face", "30"]
    assert runner.invoke(app, args).exit_code == 0
    options = fake_predict["options"]
    assert options.inputs == ("a", "b") and options.report_dir == Path("r")
    assert (options.workers, options.threads, options.min_face, options.model) == (0, 3, 30, None)


# --- progress bars in a log -------------------------------------------------------------------------------------------


def test_bar_in_a_log_writes_plain_throttled_lines(monkeypatch):
    """stderr not a terminal: whole lines, no carriage returns, at most one per LOG_INTERVAL, the final count once."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress.progress_bar(range(1000), total=1000, desc="decode", unit="img"):
        pass
    with progress.progress_bar(total=5, desc="manual") as bar:
        bar.update(2)
        bar.update(3)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    # the first line, then the final one: 1000 fast steps fall inside one 10 s interval
    assert [line.split("|")[0] for line in lines] == ["decode:   0%", "decode: 100%", "manual:   0%", "manual: 100%"]
    assert lines[1].split("|")[2].startswith(" 1000/1000") and lines[3].split("|")[2].startswith(" 5/5")


def test_bar_in_a_log_from_a_subprocess(tmp_path):
    """The same through a real pipe: what a log file receives."""
    script = "from faceattr_batch.progress import progress_bar\nfor _ in progress_bar(range(50), total=50): pass\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "\r" not in done.stderr and done.stderr.count("50/50") == 1, done.stderr


def test_quiet_bar_writes_nothing(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    progress.set_quiet(True)
    for _ in progress.progress_bar(range(10), total=10):
        pass
    assert log.getvalue() == ""


# --- errors: one line, exit 2 ---------------------------------------------------------------------------------------


def _fails(args: list[str], code: int = 2) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr.strip()


def _raising(error: BaseException):
    def run(*args, **kwargs):
        raise error

    return run


def test_a_faceattr_error_is_one_line(monkeypatch):
    monkeypatch.setattr(synth, "run", _raising(FaceattrError("--model nosuch: no such model")))
    assert _fails(["synth", "-o", "out"]) == "error: --model nosuch: no such model"


def test_disk_full_is_one_line(monkeypatch):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/manifest.parquet")
    monkeypatch.setattr(synth, "run", _raising(full))
    assert _fails(["synth", "-o", "out"]) == "error: out/manifest.parquet: No space left on device"
    monkeypatch.setattr(synth, "run", _raising(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    assert _fails(["synth", "-o", "out"]) == "error: No space left on device"


def test_ctrl_c_prints_interrupted(monkeypatch):
    monkeypatch.setattr(synth, "run", _raising(KeyboardInterrupt()))
    assert _fails(["synth", "-o", "out"], code=130) == "interrupted"


def test_output_under_a_regular_file_is_one_line(tmp_path):
    """Root ignores chmod, so the unwritable place is a folder under a regular file (was a 44-line traceback)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = _fails(["synth", "-o", str(blocker / "faces"), "--n", "2"])
    assert message.startswith("error: ") and str(blocker) in message


def test_missing_input_folder_is_one_line(tmp_path):
    assert _fails(["index", str(tmp_path / "nosuch")]).startswith(f"error: {tmp_path / 'nosuch'}")


@pytest.mark.parametrize("model", ["nosuch", "corrupt.pt"])
def test_missing_or_corrupt_model_is_one_line(tmp_path, model):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint" * 10)
    (tmp_path / "faces").mkdir()
    message = _fails(["predict", str(tmp_path / "faces"), "-o", str(tmp_path / "p.parquet"), "-m", model])
    assert message.startswith("error: ")


# --- options reach the pipelines under their agreed names ----------------------------------------------------------


def test_renamed_options(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(index, "run", lambda options, out, report: seen.setdefault("index", options) and 1 / 0)
    runner.invoke(app, ["index", str(tmp_path), "--no-file-sizes", "--hash"])
    assert seen["index"].file_sizes is False and seen["index"].hash and seen["index"].root == tmp_path
    assert seen["index"].progress  # bars on stderr, off with --json (as predict, fid and crop)
    seen.clear()
    runner.invoke(app, ["index", str(tmp_path), "--json"])
    assert seen["index"].progress is False
    monkeypatch.setattr(fid, "compute", lambda real, fake, options: seen.setdefault("fid", options) and 1 / 0)
    runner.invoke(app, ["fid", "a", "b", "--resize-to", "64"])
    assert seen["fid"].resize_to == 64
    monkeypatch.setattr(synth, "run", lambda options: seen.setdefault("synth", options) and 1 / 0)
    runner.invoke(app, ["synth", "--resolution", "32", "--gender", "female"])
    assert seen["synth"].resolution == 32 and seen["synth"].out_dir == Path("synth")


def test_train_gen_passes_iterations_once(monkeypatch):
    calls = []
    monkeypatch.setattr(train_gen, "run", lambda *args, **kwargs: calls.append((args, kwargs)) or {"model": "g.pt"})
    for args in ([], ["--iterations", "9"], ["--resume"], ["--resume", "--iterations", "9"]):
        assert runner.invoke(app, ["train-gen", "src", "-o", "run", *args]).exit_code == 0
    default = train_gen.TrainGenOptions.iterations
    assert [(options.iterations, kwargs) for (options,), kwargs in calls] == [
        (default, {"resume": False}),
        (9, {"resume": False}),
        (default, {"resume": True}),  # the run keeps its own count
        (default, {"resume": True, "iterations": 9}),  # once: as the count that replaces the run's own
    ]
    # the help states the default without importing the pipeline (and torch) at start-up
    help_text = " ".join(runner.invoke(app, ["train-gen", "--help"]).stdout.split())
    assert f"[default: ({default}; with --resume the run's own)" in help_text


def test_help_and_import_do_not_load_torch():
    """--help stays quick (0.15 s against 5 s with torch on these 2 cores): torch is imported when a command runs."""
    code = "import sys, faceattr_batch.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    help_cmd = [sys.executable, "-m", "faceattr_batch", "predict", "--help"]
    help_run = subprocess.run(help_cmd, capture_output=True, text=True)
    assert help_run.returncode == 0 and "--model" in help_run.stdout


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("faceattr-batch ")


def test_index_summary_with_an_unlabelled_duplicate(capsys):
    """A conflict group may hold a file whose name gave no labels (None): shown as 'none', not a TypeError."""
    counts = {"gender": {"male": 1}, "race": {"White": 1}, "age_band": {"20-29": 1}, "cells": []}
    counts["age_heaping"] = {"whipple": None, "ages_23_62": 0, "heaps": []}
    dups = {
        "groups": 1,
        "images_in_groups": 2,
        "byte_identical_groups": 1,
        "conflict_groups": 1,
        "across_folders": None,
    }
    conflicts = [{"dup_group": 0, "labels": ["25_0_0", None], "paths": ["25_0_0_1.jpg", "bad.jpg"]}]
    summaries.index(
        {"images": 2, "root": "faces", "output": "index.parquet", "seconds": 0.1, **counts,
         "status": {"ok": 1, "recovered": 0, "rejected": 1}, "rejected": [], "recovered": [], "skipped": {},
         "unreadable_dirs": [], "errors": {}, "duplicates": {**dups, "conflicts": conflicts}}
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "2 images under faces: 1 ok, 0 recovered, 1 rejected (0.10 s) -> index.parquet" in out
    assert re.search(r"0\W+25_0_0 vs none\W+25_0_0_1.jpg", out)


def test_json_output_has_null_where_a_metric_is_undefined(capsys):
    """--json printed train's and ensemble's undefined metrics as NaN, which is not JSON (JSON.parse fails on it;
    a reviewer's finding); the files the commands write already said null."""
    summaries.show(print, json_data={"gender_precision": float("nan"), "gaps": [float("inf"), 0.5], "n": 3})
    text = capsys.readouterr().out

    def refuse(constant: str):
        raise AssertionError(f"{constant} in --json output")

    assert json.loads(text, parse_constant=refuse) == {"gender_precision": None, "gaps": [None, 0.5], "n": 3}


def test_the_validation_table_leaves_an_undefined_value_blank():
    """train's table showed "nan" in some cells and "–" in others (a reviewer's finding): undefined is blank."""
    row = {"n": 3, "gender_accuracy": 1.0, "gender_f1": float("nan"), "race_accuracy": None, "race_macro_f1": 0.5}
    cells = summaries._validation_cells("Others", row | {"age_mae": float("nan"), "age_cs5": 0.25})
    assert cells == ["Others", "3", "100.00%", "–", "–", "0.500", "–", "25.00%"]
