"""train-gen's guards (reviewer's findings): what a resume may read, where a run may write, what is checked before
hours of training, and what the logs and grids say while it runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import TINY_RUN, make_faces
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models import inception
from faceattr_batch.pipelines.train_gen import TrainGenOptions
from faceattr_batch.pipelines.train_gen import run as train_gen
from faceattr_batch.training import gen_grid


def test_resume_refuses_an_attribute_run_and_keeps_its_options(trained, tmp_path: Path):
    faces, _ = trained
    attr_run = tmp_path / "attr_run"
    attr_run.mkdir()
    (attr_run / "last.pt").write_bytes(b"an attribute checkpoint")
    options = {"run_kind": "training", "source": str(faces), "out_dir": str(attr_run), "epochs": 1}
    (attr_run / "options.json").write_text(json.dumps(options))
    with pytest.raises(FaceattrError, match=r"attr_run holds a training run, not a generator run"):
        train_gen(TrainGenOptions(source=faces, out_dir=attr_run, **TINY_RUN), resume=True)
    assert json.loads((attr_run / "options.json").read_text()) == options


def test_a_checkpoint_that_does_not_fit_is_one_line(trained, tmp_path: Path):
    faces, run = trained
    shipped_format = shutil.copytree(run, tmp_path / "generator_as_last")
    shutil.copyfile(run / "generator.pt", shipped_format / "last.pt")  # a generator file, not a training checkpoint
    with pytest.raises(FaceattrError, match=r"last.pt: not a faceattr train-gen checkpoint"):
        train_gen(TrainGenOptions(source=faces, out_dir=shipped_format, **TINY_RUN), resume=True, iterations=4)
    edited = shutil.copytree(run, tmp_path / "edited")
    checkpoint = torch.load(edited / "last.pt", weights_only=True)
    checkpoint["config"]["g_width"] *= 2  # the networks built no longer fit the weights
    torch.save(checkpoint, edited / "last.pt")
    with pytest.raises(
        FaceattrError,
        match=r"last.pt: a train-gen checkpoint this run cannot load \(Error.* loading state_dict for Generator",
    ):
        train_gen(TrainGenOptions(source=faces, out_dir=edited, **TINY_RUN), resume=True, iterations=4)


def test_a_run_inside_its_faces_folder_is_refused_before_anything_is_written(tmp_path: Path):
    """A resume indexed the run's own evaluation samples and grids as faces."""
    make_faces(tmp_path / "faces", 4)
    with pytest.raises(FaceattrError, match=r"^-o .*faces/run is inside SOURCE: what it writes would be read as faces"):
        train_gen(
            TrainGenOptions(source=tmp_path / "faces", out_dir=tmp_path / "faces" / "run", iterations=3, **TINY_RUN)
        )
    assert sorted(p.suffix for p in (tmp_path / "faces").iterdir()) == [".jpg"] * 4


def test_what_the_evaluations_need_is_checked_before_training(trained, tmp_path: Path, monkeypatch):
    faces, _ = trained
    options = dict(TINY_RUN, evaluate=True, eval_every=3, source=faces, iterations=3)
    with pytest.raises(FaceattrError, match=r"--attr-model|no_such_model"):
        train_gen(TrainGenOptions(out_dir=tmp_path / "typo", attr_model="no_such_model", **options))
    monkeypatch.setattr(inception, "helper_weights_path", lambda: None)
    with pytest.raises(FaceattrError, match=r"FID Inception weights are not installed: .*or train with --no-eval"):
        train_gen(TrainGenOptions(out_dir=tmp_path / "no_fid", **options))
    for run in ("typo", "no_fid"):
        assert not (tmp_path / run / "last.pt").exists() and not list((tmp_path / run).glob("pixels_*"))


def test_model_options_naming_a_local_model_are_stored_absolute(trained, tmp_path, monkeypatch):
    """--teacher teacher.pt given from one folder: a resume from another loaded ./teacher.pt there. A folder of images
    named fast is no model: --teacher fast stays the shipped model's name (a reviewer's finding on the first fix)."""
    faces, _ = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher.pt").write_bytes(b"")
    (tmp_path / "gen_run").mkdir()
    (tmp_path / "gen_run" / "generator.pt").write_bytes(b"")
    (tmp_path / "fast").mkdir()
    (tmp_path / "fast" / "photo.jpg").write_bytes(b"")
    options = dict(TINY_RUN, evaluate=True, source=faces, iterations=3, attr_model="no_such_model")
    runs = {
        "local": ("teacher.pt", "gen_run", str(tmp_path / "teacher.pt"), str(tmp_path / "gen_run")),
        "shipped": ("fast", None, "fast", None),
    }
    for out, (teacher, init, stored_teacher, stored_init) in runs.items():
        with pytest.raises(FaceattrError, match="no_such_model"):  # after the run's options are written
            train_gen(TrainGenOptions(out_dir=tmp_path / out, teacher=teacher, init_generator=init, **options))
        stored = json.loads((tmp_path / out / "options.json").read_text())
        assert (stored["teacher"], stored["init_generator"]) == (stored_teacher, stored_init)


def test_warm_up_iterations_log_no_generator_loss(trained, tmp_path: Path):
    """Warm-up iterations (the discriminator alone) were averaged into loss_g as zeros."""
    faces, run = trained
    options = dict(TINY_RUN, source=faces, init_generator=str(run / "generator.pt"), d_warmup=4, iterations=6)
    train_gen(TrainGenOptions(out_dir=tmp_path / "warm", **options))
    metrics = pl.read_parquet(tmp_path / "warm" / "metrics.parquet")
    assert metrics["iteration"].to_list() == [3, 6]
    loss_g = metrics["loss_g"].to_list()
    assert loss_g[0] != loss_g[0] and loss_g[1] == loss_g[1] and loss_g[1] != 0  # NaN at first; then iteration 5-6's
    assert metrics["loss_d"].is_finite().all()


def test_learning_rates_that_train_nothing_are_refused(tmp_path: Path):
    """Both rates 0 trained nothing and reported success (one 0 trains the other network alone: a use)."""
    args = ["train-gen", str(tmp_path), "-o", str(tmp_path / "run"), "--lr-g", "0", "--lr-d", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "at least one must be above 0" in result.output, result.output
    with pytest.raises(FaceattrError, match=r"--lr-g 0.001 --lr-d -0.1: at least one must be above 0, none below"):
        train_gen(TrainGenOptions(source=tmp_path, out_dir=tmp_path / "run", lr_g=1e-3, lr_d=-0.1))
    assert not (tmp_path / "run").exists()


def test_grid_latest_keeps_the_last_whole_grid_when_a_copy_fails(tmp_path: Path, monkeypatch):
    def generator(z, gender, race, age):
        return torch.zeros(len(z), 3, 4, 4)

    draw = gen_grid.grid_drawer(8, "cpu", tmp_path)
    draw(generator, 1)
    first = (tmp_path / "grid_latest.png").read_bytes()
    assert first == (tmp_path / "grid_000001.png").read_bytes()

    def half_copy(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:10])
        raise OSError("disk full")

    monkeypatch.setattr(gen_grid.shutil, "copyfile", half_copy)
    with pytest.raises(OSError, match="disk full"):
        draw(generator, 2)
    assert (tmp_path / "grid_latest.png").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid_000001.png", "grid_000002.png", "grid_latest.png"]
