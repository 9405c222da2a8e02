"""report.build: metrics.json, breakdown.parquet, plots, one self-contained report.html, from the Parquet alone."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import polars as pl
import pytest
from conftest import make_faces
from PIL import Image

from faceattr_batch.errors import FaceattrError
from faceattr_batch.pipelines import report
from faceattr_batch.pipelines.predict import PredictOptions, run


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, tiny_attr_model):
    folder = tmp_path_factory.mktemp("report")
    make_faces(folder / "in", 40)
    (folder / "in" / "zero.jpg").write_bytes(b"")
    out = folder / "out.parquet"
    options = PredictOptions(
        inputs=(str(folder / "in"),), output=out, model=str(tiny_attr_model), workers=0, runtime="torch", progress=False
    )
    run(options)
    return out


def test_report_files_and_embedded_images(predictions, tmp_path):
    html_path = report.build(predictions, tmp_path / "rep").report
    folder = html_path.parent
    assert {p.name for p in folder.iterdir()} >= {
        "report.html", "metrics.json", "breakdown.parquet", "confusion.png", "age_pred_vs_true.png",
        "error_by_age_band.png", "error_by_race.png", "calibration.png",
    }  # fmt: skip
    page = html_path.read_text()
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 5
    assert len(re.findall(r"src='data:image/jpeg;base64,", page)) >= 12  # worst-error thumbnails
    assert "src='http" not in page and "href=" not in page  # self-contained
    assert "empty file (0 bytes)" in page and "Weakest slices" in page


def test_metrics_json_matches_an_independent_computation(predictions, tmp_path):
    report.build(predictions, tmp_path / "rep")
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    frame = pl.read_parquet(predictions)
    assert saved["images"] == frame.height == 41 and saved["predicted"] == 40
    assert saved["errors"] == {"empty file (0 bytes)": 1}
    ok = frame.filter(pl.col("error").is_null())
    mae = (ok["pred_age"] - ok["true_age"]).abs().mean()
    assert saved["overall"]["age_mae"] == pytest.approx(mae, rel=1e-6)
    assert saved["overall"]["gender_accuracy"] == pytest.approx((ok["pred_gender"] == ok["true_gender"]).mean())
    assert saved["overall"]["race_accuracy"] == pytest.approx((ok["pred_race"] == ok["true_race"]).mean())
    assert sum(map(sum, saved["race_confusion"])) == 40
    # the slices against a computation by hand: per true race, its count and age MAE
    breakdown = pl.read_parquet(tmp_path / "rep" / "breakdown.parquet")
    assert breakdown["n"].sum() == 40
    for row in saved["by_race"]:
        rows = ok.filter(pl.col("true_race_label") == row["race"])
        assert row["n"] == rows.height
        assert row["age_mae"] == pytest.approx((rows["pred_age"] - rows["true_age"]).abs().mean(), rel=1e-6)
    races = [row["race"] for row in saved["by_race"]]
    assert races == sorted(races, key=["White", "Black", "Asian", "Indian", "Others"].index)  # vocabulary order


def test_metrics_json_worst_errors_carry_paths_ages_and_labels(predictions, tmp_path):
    """Rough edge 1: every worst entry read {"literal": [...]} with polars 2.1, its paths and ages lost."""
    report.build(predictions, tmp_path / "rep")
    worst = json.loads((tmp_path / "rep" / "metrics.json").read_text())["worst"]
    frame = pl.read_parquet(predictions).filter(pl.col("error").is_null())
    by_path = {row["path"]: row for row in frame.to_dicts()}
    ages = sorted(frame.to_dicts(), key=lambda r: (-abs(r["pred_age"] - r["true_age"]), r["path"]))[:12]
    assert [entry["path"] for entry in worst["age"]] == [row["path"] for row in ages]
    for key in ("age", "gender", "race"):
        for entry in worst[key]:
            assert "literal" not in entry
            row = by_path[entry["path"]]
            assert entry["true_age"] == row["true_age"] and entry["pred_age"] == pytest.approx(row["pred_age"])
            assert (entry["true_gender"], entry["pred_gender"]) == (row["true_gender_label"], row["pred_gender_label"])
            assert (entry["true_race"], entry["pred_race"]) == (row["true_race_label"], row["pred_race_label"])
    assert worst["age"][0]["abs_age_error"] == pytest.approx(abs(ages[0]["pred_age"] - ages[0]["true_age"]))
    wrong = frame.filter(pl.col("true_race") != pl.col("pred_race"))
    assert {entry["path"] for entry in worst["race"]} <= set(wrong["path"]) and len(worst["race"]) == min(
        12, wrong.height
    )


def test_report_without_labels_and_bad_inputs(tmp_path, predictions):
    unlabelled = tmp_path / "unlabelled.parquet"
    pl.read_parquet(predictions).with_columns(
        pl.lit(None, pl.Int16).alias("true_age"), pl.lit(None, pl.Int8).alias("true_gender"),
        pl.lit(None, pl.Int8).alias("true_race"),
    ).write_parquet(unlabelled)  # fmt: skip
    page = report.build(unlabelled, tmp_path / "rep").report.read_text()
    assert "No true labels" in page and "Predicted classes" in page
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["images"] == 41
    with pytest.raises(FaceattrError, match="no such file"):
        report.build(tmp_path / "missing.parquet", tmp_path / "r2")
    # a reviewer's findings: a folder was "inside the predictions", an image "not UTF-8 text (byte 0)"
    (tmp_path / "runs").mkdir()
    with pytest.raises(FaceattrError, match=r"runs: a folder; give the predictions file$"):
        report.build(tmp_path / "runs", tmp_path / "runs" / "rep")
    face = make_faces(tmp_path / "faces", 1)[0]
    with pytest.raises(FaceattrError, match=r"\.jpg\.chip\.jpg: an image; give a predictions table"):
        report.build(face, tmp_path / "r3")
    assert not (tmp_path / "runs" / "rep").exists()
    other = tmp_path / "other.parquet"
    pl.DataFrame({"path": ["a"]}).write_parquet(other)
    with pytest.raises(FaceattrError, match="not a `predict` output"):
        report.build(other, tmp_path / "r3")


def test_labels_on_no_predicted_face_say_so_instead_of_empty_sections(tmp_path, predictions):
    """A reviewer's finding: labelled rows that were all errors gave a metrics table of headers, an empty "worst
    errors" heading, all-zero confusion matrices and groups of 0 measured images."""
    failed = tmp_path / "failed.parquet"
    frame = pl.read_parquet(predictions)
    predicted = [c for c in frame.columns if c.startswith(("pred_", "p_")) or c in ("age_low", "age_high")]
    frame.with_columns(
        pl.lit("decode: broken").alias("error"), *(pl.lit(None, frame.schema[c]).alias(c) for c in predicted)
    ).write_parquet(failed)
    page = report.build(failed, tmp_path / "rep").report.read_text()
    assert "Nothing measured" in page and "No labelled face has a prediction to measure" in page
    assert "Confusion matrices" not in page and "No true labels" not in page


def test_labels_only_on_training_images_say_so_not_no_true_labels(tmp_path, predictions):
    """A reviewer's finding: a folder of the model's training images, labelled, was reported as "No true labels"."""
    trained = tmp_path / "trained.parquet"
    frame = pl.read_parquet(predictions)
    frame.with_columns(
        in_training=pl.lit(True), training_role=pl.lit("train").cast(frame.schema["training_role"])
    ).write_parquet(trained)
    page = report.build(trained, tmp_path / "rep").report.read_text()
    labelled = frame.filter(pl.any_horizontal(pl.col("true_gender", "true_race", "true_age").is_not_null())).height
    assert f"Every labelled face ({labelled}) is an image the model was trained on" in page
    assert "No true labels" not in page and "Confusion matrices" not in page
    included = report.build(trained, tmp_path / "rep2", include_training=True).report.read_text()
    assert "Confusion matrices" in included and "Nothing measured" not in included


def test_nan_probabilities_are_no_values_and_rank_last_among_the_worst(predictions, tmp_path):
    """A reviewer's findings: NaN p_female (written by another program) gave a traceback in the calibration bins,
    and a wrong gender without a probability ranked first among the 'most confident' wrong genders."""
    frame = pl.read_parquet(predictions)
    wrong = frame.filter(pl.col("true_gender") != pl.col("pred_gender"))["path"]
    nan_path = wrong[0]
    damaged = tmp_path / "nan.parquet"
    metadata = pl.read_parquet_metadata(predictions)
    frame.with_columns(
        p_female=pl.when(pl.col("path") == nan_path).then(float("nan")).otherwise("p_female")
    ).write_parquet(damaged, metadata=metadata)
    report.build(damaged, tmp_path / "rep")
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    paths = [entry["path"] for entry in saved["worst"]["gender"]]
    assert (paths[-1] == nan_path) if len(wrong) <= 12 else (nan_path not in paths)  # after every known one
    assert saved["worst"]["gender"][0]["confidence"] is not None


def test_a_report_rebuilt_into_an_older_ones_folder_leaves_none_of_its_files(tmp_path, predictions):
    folder = tmp_path / "rep"
    report.build(predictions, folder)
    assert (folder / "breakdown.parquet").is_file() and (folder / "suspects.parquet").is_file()
    (folder / "calibration_by_skin_tone.png").write_bytes(b"a figure of an earlier --slice-by skin_tone")  # not listed
    (folder / "notes.txt").write_text("the user's")
    unlabelled = tmp_path / "unlabelled.parquet"
    pl.read_parquet(predictions).with_columns(
        pl.lit(None, pl.Int16).alias("true_age"), pl.lit(None, pl.Int8).alias("true_gender"),
        pl.lit(None, pl.Int8).alias("true_race"),
    ).write_parquet(unlabelled)  # fmt: skip
    listed = json.loads((folder / "metrics.json").read_text())["files"]
    assert "breakdown.parquet" in listed and "suspects.parquet" in listed and "confusion.png" in listed
    written = sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".parquet"))
    assert sorted(listed) == [name for name in written if name != "calibration_by_skin_tone.png"]
    report.build(unlabelled, folder)
    # no labels now: no breakdown, no suspects, none of the error plots; the earlier ones went with them, and
    # only they: a file the earlier report did not write stays, whatever its name
    assert json.loads((folder / "metrics.json").read_text())["files"] == []
    assert sorted(p.name for p in folder.iterdir()) == [
        "calibration_by_skin_tone.png", "metrics.json", "notes.txt", "report.html"
    ]  # fmt: skip
    assert (folder / "calibration_by_skin_tone.png").read_bytes() == b"a figure of an earlier --slice-by skin_tone"


def test_report_refuses_a_folder_where_it_would_replace_its_inputs(tmp_path, predictions):
    folder = tmp_path / "rep"
    report.build(predictions, folder)
    before = (folder / "breakdown.parquet").read_bytes()
    with pytest.raises(FaceattrError, match=r"^--report .*rep would replace the predictions \(breakdown.parquet\)"):
        report.build(folder / "breakdown.parquet", folder)
    assert (folder / "breakdown.parquet").read_bytes() == before


def test_a_thumbnail_of_a_file_whose_name_is_not_utf8(tmp_path):
    """A reviewer's finding: every thumbnail of a folder named with a byte that is not UTF-8 was "missing": the path
    column holds the name as text (\\xNN), which names no file."""
    from faceattr_batch.data.inputs import display_path
    from faceattr_batch.reporting.page import thumbnail

    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.jpg"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(os.fsdecode(raw), format="JPEG")
    shown = display_path(os.fsdecode(raw))
    assert shown.endswith("caf\\xe9.jpg") and not os.path.exists(shown)
    assert thumbnail({"path": shown}).startswith("<img alt='' src='data:image/jpeg;base64,")
