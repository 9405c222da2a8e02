"""The report's suspect labels (issue 20): suspects.parquet, metrics.json's ``suspects``, the page's section, the
rows of images the model saw left unranked, and ``report --suspects FILE`` alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_suspects import _class_probs
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.data.labels import GENDERS, RACES
from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics.suspects import suspect_labels
from faceattr_batch.pipelines import report
from faceattr_batch.reporting.folder import write_report
from faceattr_batch.reporting.summary import read_predictions, summarize
from faceattr_batch.schema import (
    PREDICTION_FIELDS,
    RACE_PROB_COLUMNS,
    TRAINING_ROLE,
    derived_columns,
    predictions_table,
    with_age_bins,
)

N_ROWS = 400
SEEN = 40  # rows marked in_training in the frame of ``test_rows_the_model_was_trained_on_are_counted_not_ranked``


def _frame(seed: int = 3, one_gender: bool = False) -> tuple[pl.DataFrame, dict[str, np.ndarray], dict]:
    """Predictions of a model right on 90% of rows, with 5% of the given genders, races and ages wrong (ages moved
    30 years); the wrong rows by attribute, and the true classes."""
    rng = np.random.default_rng(seed)
    gender = np.zeros(N_ROWS, dtype=int) if one_gender else rng.integers(0, 2, N_ROWS)
    race = rng.choice(5, N_ROWS, p=[0.4, 0.2, 0.15, 0.15, 0.1])
    gender_probs, race_probs = _class_probs(rng, gender, 2), _class_probs(rng, race, 5)
    age = rng.integers(5, 70, N_ROWS)
    pred_age = age + rng.normal(0, 3, N_ROWS)
    wrong = {a: rng.random(N_ROWS) < 0.05 for a in ("gender", "race", "age")}
    if one_gender:
        wrong["gender"][:] = False
    rows = {
        "path": [f"/nowhere/{i:04d}.jpg" for i in range(N_ROWS)],
        "true_gender": np.where(wrong["gender"], 1 - gender, gender),
        "pred_gender": gender_probs.argmax(axis=1),
        "p_female": gender_probs[:, 1],
        "true_race": np.where(wrong["race"], (race + rng.integers(1, 5, N_ROWS)) % 5, race),
        "pred_race": race_probs.argmax(axis=1),
        **{name: race_probs[:, j] for j, name in enumerate(RACE_PROB_COLUMNS)},
        "true_age": np.where(wrong["age"], np.where(age < 40, age + 30, age - 30), age),
        "pred_age": pred_age,
        "age_low": pred_age - 5,
        "age_high": pred_age + 5,
    }
    frame = pl.DataFrame(rows).with_columns(
        error=pl.lit(None, pl.String), model_name=pl.lit("test"), model_version=pl.lit("1")
    )
    codes = ("true_gender", "pred_gender", "true_race", "pred_race", "true_age")
    frame = with_age_bins(frame.with_columns(pl.col(c).cast(PREDICTION_FIELDS[c]) for c in codes))
    return frame.with_columns(derived_columns()), wrong, {"gender": gender, "race": race}


def _report(frame: pl.DataFrame, folder) -> tuple[pl.DataFrame, dict, str]:
    page = write_report(frame, summarize(frame), folder / "p.parquet", folder).read_text()
    saved = json.loads((folder / "metrics.json").read_text())
    return pl.read_parquet(folder / "suspects.parquet"), saved, page


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    frame, wrong, truth = _frame()
    return frame, wrong, truth, *_report(frame, tmp_path_factory.mktemp("suspects"))


def test_suspects_parquet_lists_the_flagged_rows_ranked_with_labels_by_name(noisy):
    frame, wrong, truth, listed, _, _ = noisy
    assert listed.columns == ["path", "attribute", "given", "suggested", "score", "rank", "dup_group", "group_labels"]
    assert listed["dup_group"].null_count() == listed.height  # no duplicate groups in these predictions
    flags, _ = suspect_labels(frame)
    for attribute in ("gender", "race", "age"):
        part = listed.filter(pl.col("attribute") == attribute)
        flagged = flags.filter(pl.col(f"{attribute}_suspect"))
        assert sorted(part["path"]) == sorted(flagged["path"])  # only the flagged rows, each once
        assert part["rank"].to_list() == list(range(1, part.height + 1))
        assert part["score"].to_list() == sorted(part["score"], reverse=True)
        found = set(part["path"]) & {p for p, w in zip(frame["path"], wrong[attribute], strict=True) if w}
        assert len(found) >= 0.7 * wrong[attribute].sum()  # most injected errors are listed
    for attribute, names in (("gender", GENDERS), ("race", RACES)):
        part = listed.filter(pl.col("attribute") == attribute)
        assert set(part["given"]) | set(part["suggested"]) <= set(names)
        index = {p: i for i, p in enumerate(frame["path"])}
        # an injected error's suggestion is the true class, by name
        right = [names[truth[attribute][index[p]]] == s for p, s in zip(part["path"], part["suggested"], strict=True)]
        wrong_rows = [wrong[attribute][index[p]] for p in part["path"]]
        assert sum(r for r, w in zip(right, wrong_rows, strict=True) if w) >= 0.9 * sum(wrong_rows)
    age = listed.filter(pl.col("attribute") == "age").row(0, named=True)
    given = frame.filter(pl.col("path") == age["path"]).row(0, named=True)
    assert age["given"] == str(given["true_age"]) and age["suggested"] == str(round(given["pred_age"]))


def test_metrics_json_holds_the_summary_and_the_counts(noisy):
    _, _, _, listed, saved, _ = noisy
    suspects = saved["suspects"]
    assert set(suspects) >= {"min_per_class", "age_threshold", "gender", "race", "age", "counts", "trained_on"}
    counts = dict(listed.group_by("attribute").len().iter_rows())
    assert suspects["counts"] == {a: counts.get(a, 0) for a in ("gender", "race", "age")}
    assert all(suspects[a]["flagged"] == suspects["counts"][a] for a in ("gender", "race", "age"))
    assert suspects["trained_on"] == 0 and suspects["note"] is None
    for attribute in ("gender", "race"):  # the pruned candidates hold every flagged row
        assert suspects[attribute]["flagged"] <= suspects[attribute]["estimated_errors"]
    assert [row["rank"] for row in suspects["top"]["race"]] == list(range(1, 13))


def test_page_shows_counts_and_a_gallery_of_the_top_suspects(noisy):
    page = noisy[-1]
    section = page[page.index("<h2>Suspect labels</h2>") :].split("<h2>", 2)[1]
    assert section.count("class='thumb'") == 36  # 12 per attribute
    assert "#1 given" in section and "suggested" in section and "not examined because" in section
    assert "estimated wrong" in section and "under 0.1 of the mean probability" in section


def test_one_gender_class_says_why_gender_is_not_examined(tmp_path):
    frame, _, _ = _frame(one_gender=True)
    listed, saved, page = _report(frame, tmp_path)
    assert "gender" not in set(listed["attribute"]) and saved["suspects"]["counts"]["gender"] == 0
    reason = saved["suspects"]["gender"]["reason"]
    assert reason.startswith("1 of 2 gender classes have at least 20 labelled rows")
    section = page[page.index("<h2>Suspect labels</h2>") :]
    assert reason.split("(")[0] in section and "<h3>gender" not in section and "<h3>race" in section


def test_rows_the_model_was_trained_on_are_counted_not_ranked(tmp_path):
    frame, _, _ = _frame()
    role = ["train"] * (SEEN // 2) + ["validation"] * (SEEN // 2) + [None] * (N_ROWS - SEEN)
    frame = frame.with_columns(
        training_role=pl.Series(role, dtype=TRAINING_ROLE),
        in_training=pl.Series([True] * SEEN + [None] * (N_ROWS - SEEN)),
    )
    listed, saved, page = _report(frame, tmp_path)
    trained = SEEN // 2  # the validation role's labels were never fitted: those rows are ranked
    assert not set(listed["path"]) & set(frame["path"][:trained])
    note = f"{trained} rows are images this model was trained on: not ranked (their labels look right to it)"
    assert saved["suspects"]["trained_on"] == trained and saved["suspects"]["note"] == note
    assert saved["suspects"]["gender"]["labelled"] == N_ROWS - trained and note in page


def _predictions(tmp_path) -> pl.DataFrame:
    frame, _, _ = _frame()
    empty = pl.DataFrame(schema=PREDICTION_FIELDS)
    pl.concat([empty, frame], how="diagonal_relaxed").cast(PREDICTION_FIELDS).write_parquet(tmp_path / "p.parquet")
    return frame


@pytest.mark.parametrize("name", ["list.csv", "list.parquet"])
def test_suspects_option_writes_the_list_alone(tmp_path, name):
    _predictions(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "p.parquet"), "--suspects", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    assert "suspect labels (gender" in result.output and "report:" not in result.output
    listed = pl.read_csv(tmp_path / name) if name.endswith(".csv") else pl.read_parquet(tmp_path / name)
    stored = read_predictions(tmp_path / "p.parquet")  # as the report reads it: probabilities in Float32
    expected, _, _ = _report(stored, tmp_path / "rep")
    assert_frame_equal(listed.cast(expected.schema), expected, rel_tol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "p.parquet", "rep"])


def test_suspects_option_refuses_other_formats_and_nothing_to_write(tmp_path):
    _predictions(tmp_path)
    with pytest.raises(FaceattrError, match=r"--suspects .*list.txt: write a .parquet or a .csv file, not .txt"):
        report.build(tmp_path / "p.parquet", None, suspects=tmp_path / "list.txt")
    with pytest.raises(FaceattrError, match="nothing to write: give --report DIR, --suspects FILE or both"):
        report.build(tmp_path / "p.parquet", None)
    before = (tmp_path / "p.parquet").read_bytes()
    with pytest.raises(FaceattrError, match=r"^--suspects .*p.parquet is the predictions: the output would replace it"):
        report.build(tmp_path / "p.parquet", None, suspects=tmp_path / "." / "p.parquet")
    (tmp_path / "labels.csv").write_text("path,age\n")
    with pytest.raises(FaceattrError, match=r"^--suspects .*labels.csv is --labels"):
        report.build(tmp_path / "p.parquet", None, tmp_path / "labels.csv", suspects=tmp_path / "labels.csv")
    assert (tmp_path / "p.parquet").read_bytes() == before and (tmp_path / "labels.csv").read_text() == "path,age\n"
    result = report.build(tmp_path / "p.parquet", tmp_path / "rep", suspects=tmp_path / "s.parquet")
    assert result.report.name == "report.html" and result.suspect_counts["gender"] > 0
    assert pl.read_parquet(tmp_path / "s.parquet").equals(pl.read_parquet(tmp_path / "rep" / "suspects.parquet"))


def test_suspects_is_refused_where_the_report_writes_and_waits_for_slice_by(tmp_path):
    """Reviewer's findings: `--suspects rep/breakdown.parquet` printed its path while the report wrote its breakdown
    over it; a misspelt --slice-by failed after the list was written (or replaced)."""
    _predictions(tmp_path)
    with pytest.raises(FaceattrError, match=r"^--suspects .*breakdown.parquet: the report writes that file into "):
        report.build(tmp_path / "p.parquet", tmp_path / "rep", suspects=tmp_path / "rep" / "breakdown.parquet")
    assert not (tmp_path / "rep").exists()
    (tmp_path / "s.csv").write_text("an earlier list\n")
    with pytest.raises(FaceattrError, match=r"^--slice-by nosuch: no such column; the labels' columns are: none"):
        report.build(tmp_path / "p.parquet", tmp_path / "rep", suspects=tmp_path / "s.csv", slice_by=["nosuch"])
    assert (tmp_path / "s.csv").read_text() == "an earlier list\n"
    report.build(tmp_path / "p.parquet", tmp_path / "rep", suspects=tmp_path / "rep" / "mine.csv")  # not a report's
    assert (
        pl.read_csv(tmp_path / "rep" / "mine.csv").height
        == pl.read_parquet(tmp_path / "rep" / "suspects.parquet").height
    )


def test_conflicting_duplicate_groups_of_an_index_are_listed_with_their_group(tmp_path):
    from conftest import make_faces

    folder = tmp_path / "faces"
    paths = make_faces(folder, 30)  # the first: 4 years old, male, White
    copy = folder / "100_1_0_20170112215240346.jpg.chip.jpg"  # the same picture labelled 100, female
    shutil.copy(paths[0], copy)
    runner = CliRunner()
    indexed = runner.invoke(app, ["index", str(folder), "--hash", "-o", str(tmp_path / "index.parquet")])
    assert indexed.exit_code == 0, indexed.output
    files = sorted(str(p) for p in folder.iterdir())
    n = len(files)
    predictions = pl.DataFrame(
        {
            "path": files,
            "p_female": [0.9 if f in (str(paths[0]), str(copy)) else 0.5 for f in files],
            **{name: [0.2] * n for name in RACE_PROB_COLUMNS},
            "pred_age": [95.0 if f in (str(paths[0]), str(copy)) else 30.0 for f in files],
            "age_low": [90.0] * n,
            "age_high": [99.0] * n,
            # the copy is an image the model was trained on: a conflict needs no model, so it is still listed
            "training_role": ["train" if f == str(copy) else None for f in files],
        }
    )
    predictions_table(predictions).write_parquet(tmp_path / "p.parquet")
    args = ["report", str(tmp_path / "p.parquet"), "--labels", str(tmp_path / "index.parquet")]
    result = runner.invoke(app, [*args, "--suspects", str(tmp_path / "s.csv"), "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    listed = pl.read_csv(tmp_path / "s.csv")
    group = listed.filter(pl.col("dup_group").is_not_null())
    rows = {(r["attribute"], r["given"], r["suggested"], r["group_labels"]) for r in group.iter_rows(named=True)}
    # the group's mean P(female) 0.9 and mean age 95 favour the copy's labels: the original's are listed
    assert rows == {("gender", "male", "female", "male, female"), ("age", "4", "100", "4, 100")}
    assert set(group["path"]) == {str(paths[0])} and group["dup_group"].n_unique() == 1
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())["suspects"]
    assert saved["duplicates"] == {"groups": 1, "rows": {"gender": 1, "race": 0, "age": 1}}
    page = (tmp_path / "r" / "report.html").read_text()
    assert "duplicate group" in page and "4, 100" in page


def test_the_list_names_the_face_of_a_photo_with_several(tmp_path):
    frame, _, _ = _frame()
    # two faces of each photo, as predict writes them for photos with detection
    frame = frame.with_columns(path=pl.col("path").str.replace(r"\d\.jpg$", ".jpg"), face_index=pl.int_range(400) % 10)
    empty = pl.DataFrame(schema=PREDICTION_FIELDS)
    pl.concat([empty, frame], how="diagonal_relaxed").cast(PREDICTION_FIELDS).write_parquet(tmp_path / "p.parquet")
    report.build(tmp_path / "p.parquet", None, suspects=tmp_path / "s.parquet")
    listed = pl.read_parquet(tmp_path / "s.parquet")
    assert listed.columns[:3] == ["path", "face_index", "attribute"]
    faces = frame.select("path", "face_index", "true_gender").rows()
    genders = listed.filter(pl.col("attribute") == "gender").select("path", "face_index", "given")
    for path, face, given in genders.rows():
        assert (path, face, GENDERS.index(given)) in faces  # the row is one face, its given label that face's
