"""train --folds K: fold assignment by duplicate group, out-of-fold predictions in the predictions schema, resume,
and the suspect list they feed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import make_faces
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models.registry import load_attr_model
from faceattr_batch.pipelines import train as train_module
from faceattr_batch.pipelines.train import TrainOptions, run
from faceattr_batch.schema import OUTPUT_COLUMNS, PREDICTION_FIELDS
from faceattr_batch.training.data import load_labelled, split_by_fold

TINY = dict(input_size=32, widths=(8, 16), depths=(1, 1), batch_size=16, workers=0, progress=False, epochs=1)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("folds") / "faces"
    make_faces(folder, 45)
    return folder


@pytest.fixture(scope="module")
def crossfit(faces: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("crossfit") / "run"
    return run(TrainOptions(source=faces, out_dir=out, folds=3, **TINY))


def test_each_duplicate_group_is_held_out_by_exactly_one_fold():
    table = pl.DataFrame({"path": [f"{i}" for i in range(100)], "dup_group": [i // 3 for i in range(100)]})
    held = np.stack([split_by_fold(table, 4, k, seed=1)["split"].to_numpy() == "val" for k in range(4)])
    assert (held.sum(axis=0) == 1).all()  # every image in one fold's validation side
    for k in range(4):
        groups = table.filter(pl.Series(held[k]))["dup_group"].unique()
        assert not table.filter(~pl.Series(held[k]))["dup_group"].is_in(groups.implode()).any()  # no group split
        assert 21 <= held[k].sum() <= 30
    assert split_by_fold(table, 4, 0, seed=1).equals(split_by_fold(table, 4, 0, seed=1))
    assert not split_by_fold(table, 4, 0, seed=1).equals(split_by_fold(table, 4, 0, seed=2))
    with pytest.raises(FaceattrError, match="cannot fill 40 folds"):
        split_by_fold(table.head(10), 40, 0, seed=1)


def test_out_of_fold_predictions_come_from_the_model_that_held_each_face_out(crossfit, faces: Path):
    out = crossfit.out_dir
    frame = pl.read_parquet(crossfit.predictions_path)
    assert crossfit.predictions_path == out / "oof.parquet"
    assert tuple(frame.columns) == OUTPUT_COLUMNS
    assert dict(frame.schema) == PREDICTION_FIELDS
    table = load_labelled(faces, None, 0)
    assert frame.height == 45 and frame["path"].n_unique() == 45
    assert sorted(frame["path"].to_list()) == sorted(table["file"].to_list())
    assert frame["in_training"].all() and (frame["training_role"] == "validation").all()
    assert frame["error"].null_count() == 45
    by_path = frame.join(table.select(pl.col("file").alias("path"), "age", "gender", "race"), on="path")
    assert (by_path["true_age"] == by_path["age"]).all() and (by_path["true_race"] == by_path["race"]).all()
    assert (frame["pred_gender"] == (frame["p_female"] >= 0.5).cast(pl.Int8)).all()
    # fold 1's rows: exactly what fold 1's own model predicts from their cached chips
    held = split_by_fold(table, 3, 1, seed=0)["split"].to_numpy() == "val"
    assert set(frame.filter(pl.col("model_name").str.starts_with("fold_1"))["path"]) == set(table["file"].filter(held))
    model = load_attr_model(out / "fold_1")[0]
    pixels = np.load(out / "pixels_32.npy")[held]
    with torch.inference_mode():
        expected = model.infer(torch.from_numpy(pixels).permute(0, 3, 1, 2)).p_female.numpy()
    rows = table.filter(pl.Series(held)).select(pl.col("file").alias("path")).join(frame, on="path", how="left")
    assert np.allclose(rows["p_female"].to_numpy(), expected, atol=1e-6)
    report = json.loads((out / "report.json").read_text())
    assert [fold["fold"] for fold in report["folds"]] == [0, 1, 2]
    assert sum(fold["n"] for fold in report["folds"]) == 45
    assert report["out_of_fold"]["race_accuracy"] == pytest.approx(frame["race_correct"].mean())


def test_a_cross_fit_folder_given_as_a_model_names_its_folds(crossfit):
    """A reviewer's finding: -m on a cross-fit's folder said "not a train RUN_DIR"."""
    with pytest.raises(
        FaceattrError, match=r"a cross-fitting run; give one of its folds' models \(fold_0, fold_1, fold_2\)"
    ):
        load_attr_model(crossfit.out_dir)


def test_suspects_rank_the_out_of_fold_rows(crossfit, tmp_path: Path):
    listed = tmp_path / "suspects.csv"
    result = CliRunner().invoke(app, ["report", str(crossfit.predictions_path), "--suspects", str(listed)])
    assert result.exit_code == 0, result.output
    assert "not ranked" not in result.output
    assert listed.is_file()


def test_an_interrupted_cross_fit_resumes_at_its_fold(faces: Path, tmp_path: Path, crossfit, monkeypatch):
    options = TrainOptions(source=faces, out_dir=tmp_path / "cut", folds=3, **TINY)
    real_append = train_module.append_metrics

    def crash_in_fold_two(path, row):
        if path.parent.name == "fold_1":
            raise KeyboardInterrupt
        real_append(path, row)

    monkeypatch.setattr(train_module, "append_metrics", crash_in_fold_two)
    with pytest.raises(KeyboardInterrupt):
        run(options)
    monkeypatch.setattr(train_module, "append_metrics", real_append)
    first_model = (tmp_path / "cut" / "fold_0" / "model.pt").stat().st_mtime_ns
    with pytest.raises(FaceattrError, match="already holds a cross-fitting run"):
        run(options)
    # --resume without --folds continues the cross-fit (a reviewer's finding: "nothing to resume (no last.pt)")
    result = run(replace(options, folds=1), resume=True)
    assert (tmp_path / "cut" / "fold_0" / "model.pt").stat().st_mtime_ns == first_model  # a finished fold is kept
    resumed = pl.read_parquet(result.predictions_path).drop("model_name")
    whole = pl.read_parquet(crossfit.predictions_path).drop("model_name")
    assert resumed.drop("path").equals(whole.drop("path"))  # same seed, same folds: the same predictions


def test_cli_folds_prints_each_fold_and_refuses_too_many(faces: Path, tmp_path: Path):
    runner = CliRunner()
    args = ["train", str(faces), "-o", str(tmp_path / "cli"), "--input-size", "32", "--widths", "8,16", "--depths"]
    args += ["1,1", "--epochs", "1", "--workers", "0", "-b", "16", "--folds", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "out of fold" in result.output and "oof.parquet" in result.output
    too_many = runner.invoke(app, args[:-1] + ["100", "-o", str(tmp_path / "many")])
    assert too_many.exit_code == 2
    assert "cannot fill 100 folds" in too_many.output
    # nothing trained, so no run is left behind: the corrected command starts afresh (it was told to --resume the
    # failed one, whose --resume read its 100 folds again; a reviewer's finding)
    assert list((tmp_path / "many").iterdir()) == []
    corrected = runner.invoke(app, args[:-1] + ["2", "-o", str(tmp_path / "many")])
    assert corrected.exit_code == 0, corrected.output
    assert (tmp_path / "many" / "oof.parquet").is_file()


def test_too_many_folds_keep_the_users_own_index_in_the_run_folder(faces: Path, tmp_path: Path):
    """A failed new cross-fit removes what it wrote, never the user's index that sits where the run's would."""
    from faceattr_batch.index.build import IndexOptions, build_index, write_index

    index = tmp_path / "run" / "index.parquet"
    index.parent.mkdir()
    write_index(build_index(IndexOptions(root=faces, hash=True, workers=0)), index)
    before = index.read_bytes()
    with pytest.raises(FaceattrError, match="cannot fill 100 folds"):
        run(TrainOptions(source=index, out_dir=index.parent, folds=100, **TINY))
    assert index.read_bytes() == before and sorted(p.name for p in index.parent.iterdir()) == ["index.parquet"]


def test_extra_sources_train_every_fold_and_the_predictions_cover_the_source_alone(faces: Path, tmp_path: Path):
    extra = tmp_path / "extra"
    make_faces(extra, 6, seed=3)
    result = run(TrainOptions(source=faces, out_dir=tmp_path / "x", folds=2, extra=(extra,), steps_per_epoch=1, **TINY))
    assert np.load(tmp_path / "x" / "pixels_32.npy").shape[0] == 45 + 6  # one chip cache, the extra rows after
    predictions = pl.read_parquet(result.predictions_path)
    assert predictions.height == 45 and predictions["path"].str.contains("/extra/").sum() == 0


def test_a_single_run_is_neither_resumed_nor_overwritten_as_a_cross_fit(faces: Path, tmp_path: Path):
    single = tmp_path / "single"
    run(TrainOptions(source=faces, out_dir=single, steps_per_epoch=1, **TINY))
    before = (single / "options.json").read_text()
    for resume in (True, False):
        with pytest.raises(FaceattrError, match=r"single holds a single training run \(last.pt\): cross-fit into"):
            run(TrainOptions(source=faces, out_dir=single, folds=2, **TINY), resume=resume)
    assert (single / "options.json").read_text() == before and not (single / "fold_0").exists()
