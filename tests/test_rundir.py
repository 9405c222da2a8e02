"""io.rundir.start_run: a new run, and --resume with the run's own options (machine fields and overrides as given)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.rundir import start_run


@dataclasses.dataclass(frozen=True)
class Options:
    source: Path
    out_dir: Path
    epochs: int = 30
    lr: float = 0.002
    widths: tuple = (8, 16)
    device: str = "auto"
    threads: int | None = None
    workers: int = 2
    progress: bool = True


def test_resume_keeps_the_runs_options_takes_machine_fields_and_says_what_it_ignores(tmp_path, caplog):
    out = tmp_path / "run"
    first = Options(Path("faces"), out, epochs=5, lr=0.01, widths=(4, 4), threads=1)
    assert start_run(first, "last.pt", "training", resume=False) == first
    assert json.loads((out / "options.json").read_text())["widths"] == [4, 4]
    with pytest.raises(FaceattrError, match=r"nothing to resume \(no last.pt\); run the command without --resume"):
        start_run(first, "last.pt", "training", resume=True)
    assert start_run(first, "last.pt", "training", resume=False) == first  # as the message says: stopped before
    (tmp_path / "model.pt").write_bytes(b"a model")  # a reviewer's finding: -o a file said "File exists"
    for resume in (False, True):
        with pytest.raises(FaceattrError, match=r"^-o .*model.pt: a file; name a folder for the run$"):
            start_run(Options(Path("faces"), tmp_path / "model.pt"), "last.pt", "training", resume=resume)
    assert (tmp_path / "model.pt").read_bytes() == b"a model"
    (out / "last.pt").write_bytes(b"")
    with pytest.raises(FaceattrError, match="already holds a training run: add --resume"):
        start_run(first, "last.pt", "training", resume=False)

    given = Options(Path("faces"), out, epochs=7, lr=0.002, device="cpu", threads=2, workers=0, progress=False)
    with caplog.at_level("WARNING", logger="faceattr_batch.io.rundir"):
        resumed = start_run(given, "last.pt", "training", resume=True, overrides={"lr": 0.5})
    # the source is kept as an absolute path: a resume from another folder reads the same faces
    assert resumed == Options(Path("faces").resolve(), out, 5, 0.5, (4, 4), "cpu", 2, 0, False)
    # epochs 7 is not used and said so; lr 0.002 is its default (not typed, so not said), lr is overridden anyway
    assert [r.getMessage() for r in caplog.records] == [
        "--resume goes on with the run's own options; ignored: epochs 7 (the run's: 5)"
    ]


def test_resume_says_a_source_it_ignores_and_the_options_its_file_predates(tmp_path, caplog, monkeypatch):
    """Reviewer's findings: another SOURCE given to --resume was ignored without a word (it has no default), and an
    option added after the run started silently took today's default."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    start_run(Options(Path("faces"), out, epochs=5), "last.pt", "training", resume=False)
    (out / "last.pt").write_bytes(b"")
    stored = json.loads((out / "options.json").read_text())
    assert stored["run_kind"] == "training" and stored["source"] == str(tmp_path / "faces")
    del stored["lr"]
    (out / "options.json").write_text(json.dumps(stored))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the same faces named from another folder: nothing to say
    with caplog.at_level("WARNING", logger="faceattr_batch.io.rundir"):
        assert start_run(Options(Path("../faces"), out), "last.pt", "training", resume=True).epochs == 5
        resumed = start_run(Options(Path("faces"), out), "last.pt", "training", resume=True)
    assert resumed.source == tmp_path / "faces" and resumed.lr == 0.002
    assert [r.getMessage() for r in caplog.records] == [
        "the run's options.json predates some options; they take this command's values: lr 0.002",
        # the first resume wrote lr into the file; the second names the other source it does not read
        f"--resume goes on with the run's own options; ignored: source faces (the run's: {tmp_path / 'faces'})",
    ]


@pytest.mark.parametrize("stored", [{"run_kind": "generator", "epochs": 5}, {"epochs": 5, "g_width": 16}])
def test_another_kinds_run_is_refused_and_its_options_kept(tmp_path, stored):
    """Reviewer's finding: train-gen --resume on an attribute RUN_DIR wrote its own options.json over the run's, and
    the attribute run could not be resumed any more. Older files, without the kind, by their option names."""
    (tmp_path / "last.pt").write_bytes(b"")
    (tmp_path / "options.json").write_text(json.dumps(stored))
    with pytest.raises(FaceattrError, match=r"holds (a generator run|another kind of run \(options g_width\)), not a "):
        start_run(Options(Path("faces"), tmp_path), "last.pt", "training", resume=True)
    assert json.loads((tmp_path / "options.json").read_text()) == stored


def test_a_damaged_options_file_is_one_line(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    for damaged in ('{"epochs": 5,', "[5]"):
        (tmp_path / "options.json").write_text(damaged)
        with pytest.raises(FaceattrError, match=r"options.json: cannot read the run's options \("):
            start_run(Options(Path("faces"), tmp_path), "last.pt", "training", resume=True)
