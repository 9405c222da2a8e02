"""Another tool's predictions in `report` (issue 19, any model's predictions): a deepface-like CSV with a labels CSV
-> the same report, its table's summary in metrics.json, on the page and in the terminal, metrics equal to a
computation by hand; an attribute it does not predict is not reported; --columns and --gender-one-is on the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.data.foreign_predictions import parse_columns, read_foreign_predictions
from faceattr_batch.errors import FaceattrError
from faceattr_batch.pipelines import report
from faceattr_batch.schema import PREDICTION_FIELDS

PATHS = [f"/nowhere/f{i}.jpg" for i in range(6)]
TRUE_GENDER = ["female", "male", "female", "male", "female", "male"]
TRUE_RACE = ["White", "Black", "Asian", "Indian", "Others", "White"]
TRUE_AGE = [21, 32, 43, 54, 65, 76]


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.csv"
    pl.DataFrame({"path": PATHS, "gender": TRUE_GENDER, "race": TRUE_RACE, "age": TRUE_AGE}).write_csv(path)
    return path


@pytest.fixture
def deepface(tmp_path):
    """deepface's words, no age column; line 4 (the third row) has an unreadable gender."""
    path = tmp_path / "deepface.csv"
    pl.DataFrame({
        "img_path": PATHS,
        "dominant_gender": ["Woman", "Woman", "x", "Man", "Woman", "Man"],  # right: 0, 3, 4, 5 of 5 read
        "dominant_race": ["white", "black", "asian", "white", "middle eastern", "latino hispanic"],  # right: 0-2, 4
    }).write_csv(path)  # fmt: skip
    return path


def test_a_foreign_table_reports_with_labels_and_without_ages(deepface, labels, tmp_path):
    result = report.build(deepface, tmp_path / "rep", labels)
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["foreign"] == result.foreign == read_foreign_predictions(deepface).summary | {"labelled_from_names": 0}
    assert saved["foreign"]["columns"] == {"path": "img_path", "gender": "dominant_gender", "race": "dominant_race"}
    assert saved["foreign"]["problems_by_column"] == {
        "dominant_gender": {
            "count": 1,
            "lines": [4],
            "reasons": {"'x' is not one of male, female, m, f, man, woman, 0, 1": 1},
        }
    }
    overall = saved["overall"]
    assert (overall["n_gender"], overall["gender_accuracy"]) == (5, pytest.approx(4 / 5))
    assert (overall["n_race"], overall["race_accuracy"]) == (6, pytest.approx(4 / 6))
    assert overall["n_age"] == 0 and overall["age_mae"] is None
    assert saved["models"] == [{"model_name": "deepface", "model_version": "unknown"}]
    page = result.report.read_text()
    assert "another tool's predictions" in page and "predicts gender, race (not age: not reported)" in page
    assert "middle eastern → Others" in page and "1 value not read" in page
    assert "age MAE" not in page.split("<h2>")[0]  # no age card
    assert "most confident wrong race" in page  # the worst-errors gallery, without probabilities or ages
    # no plot of what is not there: ages, probabilities
    assert {p.name for p in (tmp_path / "rep").glob("*.png")} == {"confusion.png", "error_by_race.png"}


def test_report_prints_the_foreign_summary(deepface, labels, tmp_path):
    result = CliRunner().invoke(
        app, ["report", str(deepface), "--report", str(tmp_path / "rep"), "--labels", str(labels)]
    )
    assert result.exit_code == 0, result.output
    assert "another tool's predictions" in result.output and "gender <- dominant_gender" in result.output
    assert "1 value not read" in result.output and "line 4" in result.output
    assert "a numeric gender of 1" not in result.output  # its genders are words: nothing to say of a 1


def test_report_says_which_columns_it_read_in_percent_and_what_a_numeric_1_is(labels, tmp_path):
    """A reviewer's finding: the terminal never said what a numeric gender of 1 was read as, and neither it nor the
    page said that probability columns were divided by 100."""
    table = tmp_path / "percent.csv"
    woman = [97.0, 2.0, 88.0, 10.0, 51.0, 0.5]  # every face right
    pl.DataFrame({"img_path": PATHS, "sex": [1, 0, 1, 0, 1, 0], "gender.Woman": woman}).write_csv(table)
    result = CliRunner().invoke(app, ["report", str(table), "--report", str(tmp_path / "rep"), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert "a numeric gender of 1 read as female" in result.output
    assert "read in percent (divided by 100): gender.Woman" in result.output
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["foreign"]["percent"] == ["gender.Woman"] and saved["overall"]["gender_accuracy"] == 1.0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "read in percent (divided by 100): gender.Woman" in page and "a numeric gender of 1 read as female" in page


def test_columns_and_gender_one_is_through_the_cli(labels, tmp_path):
    table = tmp_path / "mine.csv"
    pl.DataFrame({
        "image_file": PATHS,
        "is_male": [0, 1, 1, 1, 0, 0],  # 1 male (insightface's way): right on 0, 1, 3, 4
        "years": [20, 30, 40, 50, 60, 70],
        "race": ["White"] * 6,  # left out with race=
    }).write_csv(table)  # fmt: skip
    args = ["report", str(table), "--report", str(tmp_path / "rep"), "--labels", str(labels)]
    result = CliRunner().invoke(app, [*args, "--columns", "path=image_file,gender=is_male,age=years,race=",
                                      "--gender-one-is", "male"])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["foreign"]["columns"] == {"path": "image_file", "gender": "is_male", "age": "years"}
    assert saved["foreign"]["gender_one_is"] == "male" and saved["overall"]["n_race"] == 0
    assert saved["overall"]["gender_accuracy"] == pytest.approx(4 / 6)
    mae = sum(abs(t - p) for t, p in zip(TRUE_AGE, [20, 30, 40, 50, 60, 70], strict=True)) / 6
    assert saved["overall"]["age_mae"] == pytest.approx(mae)
    for bad, message in (
        (["--columns", "path"], "'path' is not ours=theirs"),
        (["--columns", "path=image_file,colour=x"], "unknown key 'colour'"),
        (["--gender-one-is", "woman"], "--gender-one-is 'woman': use female or male"),
    ):
        result = CliRunner().invoke(app, [*args, *bad])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_column_options_with_our_own_parquet_are_refused(tmp_path):
    own = tmp_path / "own.parquet"
    pl.DataFrame(schema=PREDICTION_FIELDS).write_parquet(own)
    with pytest.raises(FaceattrError, match="another tool's table"):
        report.build(own, tmp_path / "rep", columns={"path": "img"})


def test_parse_columns():
    assert parse_columns("path=img, Gender=Sex,race=") == {"path": "img", "gender": "Sex", "race": None}
    for spec, message in (("path=a,path=b", "given twice"), ("path=", "cannot be left out"), ("", "not ours=theirs")):
        with pytest.raises(FaceattrError, match=message):
            parse_columns(spec)


def test_a_foreign_table_of_utkface_names_is_labelled_by_them_without_a_labels_file(tmp_path):
    """FairFace's classifier run over UTKFace chips, reported without --labels: every row was unlabelled (0 labelled
    pairs against our own run of the same chips, which predict labels by the names). The names label it now, as
    predict's own rows; a photo with two faces, and a name that is not UTKFace's, get none."""
    names = ["25_1_2_20170116174525125.jpg.chip.jpg", "61_0_3_20170109150557335.jpg.chip.jpg", "holiday.jpg"]
    path = tmp_path / "fairface_out.csv"
    pl.DataFrame({
        "face_name_align": [f"/chips/{n}" for n in (*names, names[1])],  # the second photo: two faces
        "gender": ["Female", "Male", "Female", "Female"],
        "race": ["East Asian", "White", "Black", "Indian"],
        "age": ["20-29", "60-69", "30-39", "50-59"],
    }).write_csv(path)  # fmt: skip
    result = CliRunner().invoke(app, ["report", str(path), "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "true labels from the UTKFace-style file names: 1 row" in result.output
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["foreign"]["labelled_from_names"] == 1
    overall = saved["overall"]
    assert (overall["n_gender"], overall["gender_accuracy"], overall["race_accuracy"]) == (1, 1.0, 1.0)
    assert (overall["n_age_bin"], overall["age_bin_accuracy"]) == (1, 1.0)  # 25 inside 20-29
    assert "true labels from the UTKFace-style file names: 1 row" in (tmp_path / "rep" / "report.html").read_text()


def test_fairface_detected_face_names_are_labelled_by_their_photos_name(tmp_path):
    """FairFace's predict.py renames each face it detects in X.jpg.chip.jpg to X_face<k>.jpg: the names no longer
    parsed, so its table of UTKFace chips got no label. X still holds them; two faces of one photo get none."""
    path = tmp_path / "fairface_out.csv"
    pl.DataFrame({
        "face_name_align": ["detected_faces/25_1_2_20170116174525125_face0.jpg",
                            "detected_faces/61_0_3_20170109150557335_face0.jpg",
                            "detected_faces/61_0_3_20170109150557335_face1.jpg"],
        "gender": ["Female", "Male", "Female"],
        "race": ["East Asian", "Indian", "White"],
        "age": ["20-29", "60-69", "30-39"],
    }).write_csv(path)  # fmt: skip
    run = report.read_run(path)
    assert run.foreign["labelled_from_names"] == 1
    assert run.frame.select("true_age", "true_gender", "true_race").rows() == [(25, 1, 2), (None,) * 3, (None,) * 3]
