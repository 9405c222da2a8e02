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
    with pytest.raises(FaceattrError, match="nothing to resume"):
        start_run(first, "last.pt", "training", resume=True)
    (out / "last.pt").write_bytes(b"")
    with pytest.raises(FaceattrError, match="already holds a training run: add --resume"):
        start_run(first, "last.pt", "training", resume=False)

    given = Options(Path("elsewhere"), out, epochs=7, lr=0.002, device="cpu", threads=2, workers=0, progress=False)
    with caplog.at_level("WARNING", logger="faceattr_batch.io.rundir"):
        resumed = start_run(given, "last.pt", "training", resume=True, overrides={"lr": 0.5})
    assert resumed == Options(Path("faces"), out, 5, 0.5, (4, 4), "cpu", 2, 0, False)
    # epochs 7 is not used and said so; lr 0.002 is its default (not typed, so not said), lr is overridden anyway
    assert [r.getMessage() for r in caplog.records] == [
        "--resume goes on with the run's own options; ignored: epochs 7 (the run's: 5)"
    ]


def test_a_damaged_options_file_is_one_line(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    (tmp_path / "options.json").write_text('{"epochs": 5,')
    with pytest.raises(FaceattrError, match=r"options.json: cannot read the run's options \("):
        start_run(Options(Path("faces"), tmp_path), "last.pt", "training", resume=True)
