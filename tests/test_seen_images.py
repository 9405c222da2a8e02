"""Images a model saw: its seen-images file, predict's in_training / training_role marks, the metrics without the
train-role rows (``--include-training`` keeps them), the counts and the reason in the summaries and the report."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import make_faces
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.faces.load import FaceOptions
from faceattr_batch.models.device import resolve_device
from faceattr_batch.models.registry import SHIPPED_ATTR_MODELS, default_weights_path, seen_images_path
from faceattr_batch.models.runtime import ModelRunner
from faceattr_batch.models.seen_images import SeenImages, seen_images_table, write_seen_images
from faceattr_batch.pipelines import report
from faceattr_batch.pipelines.predict import PredictOptions, resume_fingerprint, run, seen_images

FAST = {"workers": 1, "threads": 1, "runtime": "torch", "progress": False, "batch_size": 4, "shard_size": 4}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def model_that_saw(tmp_path, tiny_attr_model) -> tuple[Path, list[Path]]:
    """The tiny model in a folder of its own beside a seen-images file: faces 0 and 1 trained on, 2 validation;
    the other five (and a byte-identical copy of face 0 under another name) as listed."""
    faces = make_faces(tmp_path / "in", 8)
    shutil.copy(faces[0], tmp_path / "in" / "copy_of_face_0.jpg")  # no labels in its name: never in the metrics
    (tmp_path / "in" / "zero.jpg").write_bytes(b"")  # decodes to an error row
    model = tmp_path / "run" / "model.pt"
    model.parent.mkdir()
    shutil.copy(tiny_attr_model, model)
    hashes = pl.Series([_sha256(p) for p in faces[:3]])
    write_seen_images(
        seen_images_table(hashes, pl.Series(["train", "train", "val"])), model.parent / "seen_images.parquet"
    )
    return model, faces


def _predict(tmp_path, model, **options):
    out = tmp_path / f"out{len(list(tmp_path.glob('out*.parquet')))}.parquet"
    return run(PredictOptions(inputs=(str(tmp_path / "in"),), output=out, model=str(model), **FAST, **options))


def test_rows_are_marked_and_the_train_role_rows_leave_the_metrics(tmp_path, model_that_saw):
    model, faces = model_that_saw
    assert seen_images_path(model) == model.parent / "seen_images.parquet"
    result = _predict(tmp_path, model)
    frame = pl.read_parquet(result.output)
    marks = {
        Path(p).name: (seen, role) for p, seen, role in frame.select("path", "in_training", "training_role").rows()
    }
    assert marks[faces[0].name] == marks[faces[1].name] == marks["copy_of_face_0.jpg"] == (True, "train")
    assert marks[faces[2].name] == (True, "validation")
    assert all(marks[p.name] == (False, None) for p in faces[3:])
    assert marks["zero.jpg"] == (False, None)  # its bytes were read (and are in no role); it has no prediction
    assert frame.schema["training_role"] == pl.Enum(["train", "validation"])

    training = result.training
    assert {k: training[k] for k in ("recorded", "train", "validation", "included", "left_out")} == {
        "recorded": True, "train": 3, "validation": 1, "included": False, "left_out": 2,
    }  # fmt: skip
    assert result.labelled == 8 and result.metrics["n_age"] == 6  # 8 labelled faces less the 2 trained on
    assert training["validation_metrics"]["n_age"] == 1
    assert training["notes"][0].startswith("3 images were used to train this model: left out of the metrics")
    assert training["notes"][1].startswith("1 images chose its checkpoints and temperatures (validation role): kept")

    kept = _predict(tmp_path, model, include_training=True)
    assert kept.metrics["n_age"] == 8 and kept.training["included"] and kept.training["left_out"] == 0
    assert "kept in the metrics (--include-training)" in kept.training["notes"][0]


def test_a_model_that_records_nothing_writes_nulls_and_keeps_every_row(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 4)
    assert seen_images_path(tiny_attr_model) is None
    result = _predict(tmp_path, tiny_attr_model)
    frame = pl.read_parquet(result.output)
    assert frame["in_training"].null_count() == frame["training_role"].null_count() == 4
    assert result.metrics["n_age"] == 4
    assert result.training == {
        "recorded": False, "train": 0, "validation": 0, "included": False, "left_out": 0,
        "validation_metrics": None, "notes": [],
    }  # fmt: skip


def test_cli_counts_reason_and_report(tmp_path, model_that_saw):
    model, faces = model_that_saw
    out = tmp_path / "cli.parquet"
    runner = CliRunner()
    base = ["predict", str(tmp_path / "in"), "-o", str(out), "-m", str(model), "--workers", "0", "--faces", "chips"]
    shown = runner.invoke(app, base)
    assert shown.exit_code == 0, shown.output
    assert "3 images were used to train this model: left out of the metrics (--include-training keeps them)" in (
        shown.output
    )
    assert "1 images chose its checkpoints and temperatures (validation role): kept; alone: gender" in shown.output
    data = json.loads(runner.invoke(app, [*base, "--json", "--include-training"]).output)
    assert (data["training"]["train"], data["training"]["validation"], data["training"]["included"]) == (3, 1, True)
    assert data["metrics"]["n_age"] == 8

    rep = runner.invoke(app, ["report", str(out), "--report", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    assert "3 images were used to train this model: left out of the metrics" in rep.output
    contents = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert contents["training"]["train"] == 3 and contents["training"]["left_out"] == 2
    assert contents["overall"]["n_age"] == 6
    assert sum(row["n"] for row in contents["by_race"]) == 6  # the breakdowns read the same rows
    assert "3 images were used to train this model" in (tmp_path / "rep" / "report.html").read_text()
    both = report.build(out, tmp_path / "rep2", include_training=True)
    assert json.loads((tmp_path / "rep2" / "metrics.json").read_text())["overall"]["n_age"] == 8
    assert both.training["included"]


def test_the_seen_images_file_is_part_of_the_resume_fingerprint_only_when_there_is_one(model_that_saw):
    model, _ = model_that_saw
    chips = FaceOptions("chips")
    runner = ModelRunner.load(str(model), resolve_device("cpu"), "torch", 1)
    seen = seen_images(runner)
    assert resume_fingerprint(runner, "names", chips, seen)["seen_images"] == seen.digest
    (model.parent / "seen_images.parquet").unlink()
    assert "seen_images" not in resume_fingerprint(runner, "names", chips, seen_images(runner))


def test_seen_images_table_keeps_one_row_per_hash_train_first():
    hashes = pl.Series(["AA" * 32, "aa" * 32, "bb" * 32, None])
    table = seen_images_table(hashes, pl.Series(["val", "train", "val", "train"]))
    assert table.rows() == [("aa" * 32, "train"), ("bb" * 32, "validation")]
    with pytest.raises(Exception, match="expected train, val"):
        seen_images_table(hashes, pl.Series(["test"] * 4))


# --- the shipped file ---------------------------------------------------------------------------------------


def test_the_shipped_seen_images_file_lists_the_model_card_split():
    path = default_weights_path("seen_images.parquet")
    for name, file_name in SHIPPED_ATTR_MODELS.items():
        weights = default_weights_path(file_name)
        assert seen_images_path(weights) == path == seen_images_path(weights.with_suffix(".onnx")), name
    table = pl.read_parquet(path)
    assert table.schema == pl.Schema({"sha256": pl.String, "role": pl.Enum(["train", "validation"])})
    assert table["sha256"].is_unique().all() and table["sha256"].is_sorted()
    assert table["sha256"].str.contains("^[0-9a-f]{64}$").all()
    # the 17,074 training and 1,890 validation faces of MODEL_CARD.md hold byte-identical copies: distinct hashes
    assert dict(table["role"].cast(pl.String).value_counts().rows()) == {"train": 16_796, "validation": 1_857}


def test_a_shared_chip_the_shipped_models_trained_on_is_marked(tmp_path, shared_utkface):
    seen = SeenImages.load(default_weights_path("seen_images.parquet"))
    chosen: dict[str, Path] = {}
    for name in sorted(os.listdir(shared_utkface)):
        role = seen.roles.get(_sha256(shared_utkface / name))
        if role is not None:
            chosen.setdefault(role, shared_utkface / name)
        if len(chosen) == 2:
            break
    for role, path in chosen.items():  # linked, not copied, under a folder named after the role the file gives
        (tmp_path / "in" / role).mkdir(parents=True)
        (tmp_path / "in" / role / path.name).symlink_to(path)
    result = run(
        PredictOptions(inputs=(str(tmp_path / "in"),), output=tmp_path / "p.parquet", model="fast", progress=False)
    )
    frame = pl.read_parquet(result.output)
    assert frame.height == 2
    for path, role in frame.select("path", "training_role").rows():
        assert Path(path).parent.name == role
    assert result.training["train"] == 1 and result.training["validation"] == 1
    assert result.metrics["n_age"] == 1  # the validation chip alone
