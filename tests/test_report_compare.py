"""Two runs compared (report.compare, reporting.compare): metrics side by side with B − A equal to a computation by
hand, paired bootstrap intervals (seeded, holding the point difference) over the images both runs share, the
disagreements and their gallery, the page with both runs; disjoint runs get no paired interval and say so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.data.labels import MAX_AGE
from faceattr_batch.metrics import attributes
from faceattr_batch.pipelines import report
from faceattr_batch.reporting.compare import Run, compare_runs, shown_metrics
from faceattr_batch.reporting.compare_page import compare_html
from faceattr_batch.reporting.disagreements import AGE_DISAGREEMENT
from faceattr_batch.reporting.summary import READ_COLUMNS
from faceattr_batch.schema import MODEL_KEY, PREDICTION_FIELDS, RACE_PROB_COLUMNS, derived_columns, recorded
from faceattr_batch.summaries_runs import compared_runs

TRUE_GENDER = [0, 1, 0, 1, 0, 1, 0, 1]
TRUE_RACE = [0, 1, 2, 3, 4, 0, 1, 2]
TRUE_AGE = [20, 30, 40, 50, 60, 25, 35, 45]
# run A: gender wrong on image 1, race wrong on image 2, age errors summing to 12 (MAE 1.5)
A_GENDER = [0, 0, 0, 1, 0, 1, 0, 1]
A_RACE = [0, 1, 0, 3, 4, 0, 1, 2]
A_AGE_ERROR = [1, -1, 2, -2, 0, 0, 3, -3]
# run B: gender wrong on 1, 3 and 5, race wrong on 0, age errors summing to 41 (MAE 5.125); image 4 is 20 y off A
B_GENDER = [0, 0, 0, 0, 0, 0, 0, 1]
B_RACE = [1, 1, 2, 3, 4, 0, 1, 2]
B_AGE_ERROR = [5, 5, -5, 5, 20, 0, 0, 1]


def _frame(paths, gender, race, age_error, model, true=True) -> pl.DataFrame:
    """A predictions frame in the schema (READ_COLUMNS), the true labels of the module's images where ``true``."""
    n = len(paths)
    probs = np.full((n, 5), 0.1)
    probs[np.arange(n), race] = 0.6
    rows = {
        "path": paths,
        "pred_gender": gender,
        "p_female": [0.9 if g else 0.2 for g in gender],
        "pred_race": race,
        **{name: probs[:, i] for i, name in enumerate(RACE_PROB_COLUMNS)},
        "pred_age": [t + e for t, e in zip(TRUE_AGE, age_error, strict=True)],
        "true_gender": TRUE_GENDER if true else [None] * n,
        "true_race": TRUE_RACE if true else [None] * n,
        "true_age": TRUE_AGE if true else [None] * n,
        "model_name": [model] * n,
        "model_version": ["test-1"] * n,
        "source": ["lab", "web"] * (n // 2),
    }
    frame = pl.DataFrame(rows).with_columns(
        pl.col(c).cast(PREDICTION_FIELDS[c]) for c in rows if c in PREDICTION_FIELDS
    )
    frame = frame.with_columns(pl.lit(None, PREDICTION_FIELDS[c]).alias(c) for c in READ_COLUMNS if c not in rows)
    return frame.with_columns(derived_columns())


def _paths(prefix: str = "p") -> list[str]:
    return [f"/nowhere/{prefix}{i}.jpg" for i in range(8)]


def _runs(b_paths=None, **options):
    a = Run(Path("a.parquet"), _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours"))
    b = Run(Path("b.parquet"), _frame(b_paths or _paths(), B_GENDER, B_RACE, B_AGE_ERROR, "theirs"))
    return compare_runs(a, b, **options)


@pytest.fixture(scope="module")
def compared():
    return _runs(slice_by=["source"]).contents


def test_differences_are_b_minus_a_computed_by_hand(compared):
    overall = compared["overall"]
    assert overall["gender_accuracy"] | {"paired": None} == {
        "a": 7 / 8, "b": 5 / 8, "diff": pytest.approx(-0.25), "n_a": 8, "n_b": 8, "paired": None
    }  # fmt: skip
    assert overall["race_accuracy"]["diff"] == pytest.approx(0.0)
    assert (overall["age_mae"]["a"], overall["age_mae"]["b"]) == pytest.approx((1.5, 5.125))
    assert overall["age_mae"]["diff"] == pytest.approx(3.625)
    # every compared metric the report's own table has equals attributes.overall on each run
    same_as = {"gender_recall_female": "gender_recall"}
    for run, key in (("ours", "a"), ("theirs", "b")):
        frame = _frame(
            _paths(), *((A_GENDER, A_RACE, A_AGE_ERROR) if key == "a" else (B_GENDER, B_RACE, B_AGE_ERROR)), run
        )
        own = attributes.overall(frame)
        for name in ("gender_precision", "gender_recall_female", "gender_f1", "race_macro_f1", "age_rmse", "age_cs5",
                     "age_gross_rate", "age_bias"):  # fmt: skip
            assert overall[name][key] == pytest.approx(own[same_as.get(name, name)]), name
    # per slice: true women, A right on 3 of 4, B on 1; true men's MAE 6 / 4 and 30 / 4
    by_gender = {g["group"]: g["metrics"] for g in compared["slices"]["gender"]["groups"]}
    assert by_gender["female"]["gender_accuracy"]["diff"] == pytest.approx(1 / 4 - 3 / 4)
    assert by_gender["male"]["age_mae"]["diff"] == pytest.approx(30 / 4 - 6 / 4)
    assert "gender_precision" not in by_gender["male"]  # one true class: meaningless inside the group
    by_source = {g["group"]: g for g in compared["slices"]["source"]["groups"]}
    lab = [i for i in range(8) if i % 2 == 0]
    hand = np.mean([abs(B_AGE_ERROR[i]) for i in lab]) - np.mean([abs(A_AGE_ERROR[i]) for i in lab])
    assert by_source["lab"]["metrics"]["age_mae"]["diff"] == pytest.approx(hand)
    assert by_source["lab"]["n_a"] == by_source["lab"]["pairs"] == 4


def test_paired_intervals_hold_the_point_difference_and_are_seeded(compared):
    assert compared["shared"] | {"reason": None} == {
        "matched_by": "path", "images": 8, "only_a": 0, "only_b": 0, "pairs": 8, "labelled_pairs": 8,
        "several_faces": 0, "paired": True, "reason": None,
    }  # fmt: skip
    assert compared["resamples"] >= 1000
    for name in ("gender_accuracy", "age_mae", "age_bias", "race_macro_f1"):
        paired = compared["overall"][name]["paired"]
        assert paired["n"] == 8 and paired["diff"] == pytest.approx(compared["overall"][name]["diff"])
        assert paired["low"] <= paired["diff"] <= paired["high"], name
    # the age errors' paired differences |eB| - |eA| lie in [-3, 20]: so does every resample's mean
    mae = compared["overall"]["age_mae"]["paired"]
    assert -3 <= mae["low"] < 3.625 < mae["high"] <= 20
    assert _runs(slice_by=["source"]).contents == compared  # the same seed: the same intervals
    other = _runs(slice_by=["source"], seed=1).contents["overall"]["age_mae"]["paired"]
    assert (other["low"], other["high"]) != (mae["low"], mae["high"])


def test_disagreements_and_the_gallery_of_the_largest(compared):
    assert compared["disagreements"] == {
        "pairs": 8, "age_threshold": AGE_DISAGREEMENT,
        "gender": {"compared": 8, "disagree": 2, "share": 0.25},  # images 3 and 5
        "race": {"compared": 8, "disagree": 2, "share": 0.25},  # images 0 and 2
        "age": {"compared": 8, "disagree": 1, "share": 0.125, "as_bins": 0},  # image 4: 60 against 80
    }  # fmt: skip
    (age,) = compared["gallery"]["age"]
    assert age | {"a_p_female": None, "b_p_female": None, "a_race_confidence": None, "b_race_confidence": None} == {
        "path": "/nowhere/p4.jpg", "true_age": 60, "true_age_low": None, "true_age_high": None, "true_gender": "male",
        "true_race": "Others", "a_gender": "male", "a_race": "Others", "a_age": 60.0, "a_age_low": None,
        "a_age_high": None, "b_gender": "male", "b_race": "Others", "b_age": 80.0, "b_age_low": None,
        "b_age_high": None, "difference": 20.0, "a_p_female": None, "b_p_female": None, "a_race_confidence": None,
        "b_race_confidence": None,
    }  # fmt: skip
    assert [row["path"] for row in compared["gallery"]["gender"]] == ["/nowhere/p3.jpg", "/nowhere/p5.jpg"]


def test_partly_shared_images_are_counted_and_paired_on_the_shared_ones():
    b_paths = _paths()[4:] + _paths("q")[:4]
    contents = _runs(b_paths).contents
    assert contents["shared"] | {"reason": None} == {
        "matched_by": "path", "images": 4, "only_a": 4, "only_b": 4, "pairs": 4, "labelled_pairs": 4,
        "several_faces": 0, "paired": True, "reason": None,
    }  # fmt: skip
    # on the pairs (A's images 4-7 against B's rows 0-3, the same files): B's age errors 5, 5, -5, 5
    paired = contents["overall"]["age_mae"]["paired"]
    assert paired["diff"] == pytest.approx(5 - np.mean(np.abs(A_AGE_ERROR[4:])))


def test_disjoint_runs_get_no_paired_interval_and_say_so(tmp_path):
    contents = _runs(_paths("q")).contents
    assert contents["shared"]["images"] == 0 and contents["shared"]["paired"] is False
    assert "no image is in both runs" in contents["shared"]["reason"]
    assert all(entry["paired"] is None for entry in contents["overall"].values())
    assert contents["overall"]["age_mae"]["diff"] == pytest.approx(3.625)  # still compared, unpaired
    assert contents["disagreements"]["pairs"] == 0 and contents["gallery"]["age"] == []
    a, b = _write_own(tmp_path, "a", _paths()), _write_own(tmp_path, "b", _paths("q"), B_GENDER, B_RACE, B_AGE_ERROR)
    page = report.compare(a, b, tmp_path / "rep").report.read_text()
    assert "no paired interval: no image is in both runs" in page


def _write_own(tmp_path, name, paths, gender=A_GENDER, race=A_RACE, error=A_AGE_ERROR, model=None) -> Path:
    """A Parquet as predict writes it (every schema column; with ``model``, its model metadata too), without the true
    labels (--labels brings them)."""
    frame = _frame(paths, gender, race, error, model["name"] if model else name, true=False).drop("source")
    frame = frame.with_columns(pl.lit(None, PREDICTION_FIELDS[c]).alias(c) for c in PREDICTION_FIELDS if c not in frame)
    path = tmp_path / f"{name}.parquet"
    table = frame.select(list(PREDICTION_FIELDS)).to_arrow()
    pq.write_table(table.replace_schema_metadata({MODEL_KEY: json.dumps(model)} if model else None), path)
    return path


def test_two_runs_of_one_model_name_are_told_apart_by_their_model_files(tmp_path):
    """Two trainings of one version name the same model ("faceattr-attr 0.1.0"): each run's name then carries the
    model file predict recorded in its Parquet."""
    files = {}
    for name, errors in (("a", A_AGE_ERROR), ("b", B_AGE_ERROR)):
        model = {"name": "faceattr-attr", "version": "0.1.0", "source": f"/runs/{name}/model.pt"}
        files[name] = _write_own(tmp_path, name, _paths(), error=errors, model=model)
    assert recorded(files["a"], MODEL_KEY)["source"] == "/runs/a/model.pt"
    result = report.compare(files["a"], files["b"], tmp_path / "rep")
    compare = json.loads((tmp_path / "rep" / "metrics.json").read_text())["compare"]
    assert compare["a"]["name"] == "faceattr-attr test-1 (/runs/a/model.pt)"
    assert compare["b"]["name"] == "faceattr-attr test-1 (/runs/b/model.pt)"
    assert compare["b"]["model_source"] == "/runs/b/model.pt"
    assert "A: faceattr-attr test-1 (/runs/a/model.pt)" in result.report.read_text()


@pytest.fixture
def ours_and_deepface(tmp_path):
    """Our Parquet (A) and a deepface CSV of the same images (B: dominant_gender, dominant_race, age), and a
    labels CSV with a source column."""
    ours = _write_own(tmp_path, "ours", _paths())
    words = {0: "Man", 1: "Woman"}
    races = ["white", "black", "asian", "indian", "middle eastern"]
    deepface = pl.DataFrame({
        "img_path": _paths(), "dominant_gender": [words[g] for g in B_GENDER],
        "dominant_race": [races[r] for r in B_RACE], "age": [t + e for t, e in zip(TRUE_AGE, B_AGE_ERROR, strict=True)],
    })  # fmt: skip
    deepface.write_csv(tmp_path / "deepface.csv")
    labels = pl.DataFrame({
        "path": _paths(), "gender": [("male", "female")[g] for g in TRUE_GENDER], "race": TRUE_RACE,
        "age": TRUE_AGE, "source": ["lab", "web"] * 4,
    })  # fmt: skip
    labels.write_csv(tmp_path / "labels.csv")
    return ours, tmp_path / "deepface.csv", tmp_path / "labels.csv"


def test_compare_report_of_ours_and_a_foreign_table_shows_both(ours_and_deepface, tmp_path):
    ours, deepface, labels = ours_and_deepface
    result = report.compare(ours, deepface, tmp_path / "rep", labels, slice_by=["source"])
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    compare = saved["compare"]
    assert compare["a"]["name"] == "ours test-1" and compare["b"]["name"] == "deepface"
    assert compare["b"]["foreign"]["columns"]["gender"] == "dominant_gender" and compare["a"]["foreign"] is None
    assert compare["b"]["attributes"] == ["gender", "race", "age"]
    assert compare["overall"]["age_mae"]["diff"] == pytest.approx(3.625)
    assert compare["overall"]["gender_accuracy"]["diff"] == pytest.approx(-0.25)
    assert compare["shared"]["pairs"] == 8 and compare["disagreements"]["age"]["disagree"] == 1
    assert result.compare["shared"] == compare["shared"]
    assert saved["overall"]["age_mae"] == pytest.approx(1.5)  # the rest of the report is A's
    page = result.report.read_text()
    assert "Two runs compared" in page and "A: ours test-1" in page and "B: deepface" in page
    assert "another tool's predictions" in page and "by source" in page
    assert page.count("class='thumb'") >= 1 + 2 + 2 + 1  # the gallery (age 1, gender 2, race 2) and A's worst


def test_compare_through_the_cli(ours_and_deepface, tmp_path):
    ours, deepface, labels = ours_and_deepface
    args = ["report", str(ours), "--compare", str(deepface), "--report", str(tmp_path / "rep"), "--labels", str(labels)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "8 images in both runs" in result.output and "age MAE" in result.output
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["compare"]["shared"]["pairs"] == 8


def test_another_tools_relative_paths_pair_with_our_absolute_ones(tmp_path, monkeypatch):
    """A reviewer's finding: deepface's rows name `faces/p0.jpg` as its snippet writes them, predict's the absolute
    path, so the documented comparison found no image in both runs."""
    monkeypatch.chdir(tmp_path)
    relative = [f"faces/p{i}.jpg" for i in range(8)]
    ours = _write_own(tmp_path, "ours", [str(tmp_path.resolve() / name) for name in relative])
    pl.DataFrame({"img_path": relative, "age": [t + e for t, e in zip(TRUE_AGE, B_AGE_ERROR, strict=True)]}).write_csv(
        tmp_path / "deepface.csv"
    )
    pl.DataFrame({"path": relative, "age": TRUE_AGE}).write_csv(tmp_path / "labels.csv")
    result = report.compare(ours, tmp_path / "deepface.csv", tmp_path / "rep", tmp_path / "labels.csv")
    assert result.compare["shared"] == {
        "matched_by": "path", "images": 8, "only_a": 0, "only_b": 0, "pairs": 8, "several_faces": 0,
        "paired": True, "reason": None, "labelled_pairs": 8,
    }  # fmt: skip
    assert result.compare["overall"]["age_mae"]["diff"] == pytest.approx(3.625)
    # B predicts no gender (nor do the labels hold one): said so, not "no labelled image in both runs"
    assert (
        result.compare["overall"]["gender_accuracy"]["paired"]["reason"]
        == "no labelled image that either run predicts it on"
    )


@pytest.mark.parametrize(
    ("a_rows", "b_rows", "reason"),
    [
        (slice(0, 8), slice(0, 0), "B predicts it on no labelled image"),
        (slice(0, 0), slice(0, 8), "A predicts it on no labelled image"),
        (slice(0, 4), slice(4, 8), "no labelled image that both runs predict it on"),
    ],
)
def test_an_attribute_without_pairs_names_the_run_that_predicts_it_on_none(a_rows, b_rows, reason):
    """The reason was "no labelled image that both runs predict it on" even where one run predicts no race at all."""
    runs = []
    for rows, side in ((a_rows, "a"), (b_rows, "b")):
        frame = _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, side)
        kept = pl.int_range(pl.len()).is_between(rows.start, rows.stop - 1)
        frame = frame.with_columns(pl.when(kept).then(pl.col("pred_race")).alias("pred_race"))
        runs.append(Run(Path(f"{side}.parquet"), frame.with_columns(derived_columns())))
    a, b = runs
    overall = compare_runs(a, b).contents["overall"]
    assert overall["race_accuracy"]["paired"]["n"] == 0 and overall["race_accuracy"]["paired"]["reason"] == reason
    assert overall["gender_accuracy"]["paired"]["reason"] is None


def test_another_tools_paths_through_a_linked_folder_pair_with_ours(tmp_path, monkeypatch):
    """predict keeps a linked folder's name in its paths (os.path.abspath); another tool's relative paths were
    resolved through the link to its target and so found no image in both runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces_on_disk").mkdir()
    (tmp_path / "faces").symlink_to(tmp_path / "faces_on_disk", target_is_directory=True)
    relative = [f"faces/p{i}.jpg" for i in range(8)]
    ours = _write_own(tmp_path, "ours", [os.path.join(os.getcwd(), name) for name in relative])
    theirs = pl.DataFrame({"img_path": relative, "age": [t + e for t, e in zip(TRUE_AGE, B_AGE_ERROR, strict=True)]})
    theirs.write_csv(tmp_path / "deepface.csv")
    pl.DataFrame({"path": relative, "age": TRUE_AGE}).write_csv(tmp_path / "labels.csv")
    result = report.compare(ours, tmp_path / "deepface.csv", tmp_path / "rep", tmp_path / "labels.csv")
    assert (result.compare["shared"]["pairs"], result.compare["shared"]["only_b"]) == (8, 0)


def test_the_pairs_of_an_attribute_are_the_images_both_runs_predict_it_on():
    """A reviewer's finding: B, a copy of A without ages on A's two worst, read as 'B better' with a paired interval
    excluding 0: each side's MAE was over its own known rows, not over the same images."""
    a = Run(Path("a.parquet"), _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours"))
    b_frame = _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "theirs")
    b_frame = b_frame.with_columns(pl.when(pl.int_range(pl.len()) < 6).then(pl.col("pred_age")).alias("pred_age"))
    overall = compare_runs(a, Run(Path("b.parquet"), b_frame)).contents["overall"]
    mae = overall["age_mae"]
    assert (mae["n_a"], mae["n_b"]) == (8, 6) and mae["a"] == pytest.approx(1.5) and mae["b"] == pytest.approx(1.0)
    assert mae["paired"] | {"low": None, "high": None, "reason": None} == {
        "n": 6, "a": pytest.approx(1.0), "b": pytest.approx(1.0), "diff": pytest.approx(0.0),
        "low": None, "high": None, "reason": None,
    }  # fmt: skip
    assert mae["paired"]["low"] == pytest.approx(0.0) and mae["paired"]["high"] == pytest.approx(0.0)
    assert overall["gender_accuracy"]["paired"]["n"] == 8  # the genders of all eight are in both


def test_a_bias_verdict_needs_both_biases_on_one_side_of_zero():
    """A reviewer's finding: A 2 years low and B 2 years high read "B worse" in red (the interval of B - A, +3.9 to
    +4.2, excludes 0, but says nothing about which bias is nearer 0)."""
    from faceattr_batch.reporting.compare_page import _verdict

    opposite = {"paired": {"a": -2.03, "b": 2.03, "low": 3.93, "high": 4.17}}
    assert _verdict(opposite, "zero") == ""
    nearer = {"paired": {"a": -6.68, "b": -5.88, "low": 0.19, "high": 2.25}}
    assert _verdict(nearer, "zero") == "<span class='better'>B better</span>"
    assert _verdict({"paired": {"a": 3.0, "b": 5.0, "low": 1.0, "high": 3.0}}, "zero") == (
        "<span class='worse'>B worse</span>"
    )


def test_a_compare_table_sorts_its_groups_in_their_own_order(compared):
    """A reviewer's finding: a click on the group header sorted age bands as text (0-2, 10-19, 20-29, 3-9)."""
    import re

    from faceattr_batch.reporting.compare_page import _slice_tables

    page = _slice_tables("age_band", compared["slices"]["age_band"], compared)
    groups = [g["group"] for g in compared["slices"]["age_band"]["groups"]]
    first_cells = re.findall(r"<tr><td class='l' data-v='([^']*)'>([^<]*)</td>", page)
    assert first_cells[: len(groups)] == [(str(i), group) for i, group in enumerate(groups)]


def _binned(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its true ages as bins only (FairFace's labels): true - 5 to true + 4, no exact age."""
    return frame.with_columns(
        (pl.col("true_age") - 5).cast(PREDICTION_FIELDS["true_age_low"]).alias("true_age_low"),
        (pl.col("true_age") + 4).cast(PREDICTION_FIELDS["true_age_high"]).alias("true_age_high"),
        pl.lit(None, PREDICTION_FIELDS["true_age"]).alias("true_age"),
    ).with_columns(derived_columns())


def _binned_runs() -> tuple[Run, Run]:
    a = Run(Path("a.parquet"), _binned(_frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours")))
    b = Run(Path("b.parquet"), _binned(_frame(_paths(), B_GENDER, B_RACE, B_AGE_ERROR, "theirs")))
    return a, b


def test_ages_labelled_as_bins_are_compared_by_the_share_inside_the_bin():
    """The last session's finding: two runs with FairFace's age bins compared gender and race, and for age printed
    "age MAE - undefined in A over the 500 pairs": no age-bin row, though every pair had a bin."""
    a, b = _binned_runs()
    contents = compare_runs(a, b).contents
    in_bin = contents["overall"]["age_bin_accuracy"]
    # A's errors (at most 3 years) all lie inside true - 5 .. true + 4; B's +5, +5, +5 and +20 do not
    assert in_bin | {"paired": None} == {"a": 1.0, "b": 0.5, "diff": -0.5, "n_a": 8, "n_b": 8, "paired": None}
    assert in_bin["a"] == attributes.overall(a.frame)["age_bin_accuracy"]
    assert in_bin["b"] == attributes.overall(b.frame)["age_bin_accuracy"]
    paired = in_bin["paired"]
    assert (paired["n"], paired["diff"], paired["reason"]) == (8, -0.5, None)
    assert -1.0 <= paired["low"] < -0.5 < paired["high"] <= 0.0
    assert contents["metrics"]["age_bin_accuracy"] == {"attribute": "age", "better": "higher", "unit": "share",
                                                       "count": "age_binned"}  # fmt: skip
    mae = contents["overall"]["age_mae"]
    assert (mae["a"], mae["n_a"], mae["n_b"], mae["paired"]["n"]) == (None, 0, 0, 0)
    assert mae["paired"]["reason"] == "no pair with its age measured in years in both runs"
    shown = shown_metrics(contents)
    assert "age_bin_accuracy" in shown and "gender_accuracy" in shown
    assert not {"age_mae", "age_rmse", "age_bias", "age_cs5", "age_gross_rate", "age_r2"} & set(shown)


def test_exact_ages_hide_the_age_bin_row_and_no_age_labels_keep_the_exact_ones(compared):
    assert "age_mae" in shown_metrics(compared) and "age_bin_accuracy" not in shown_metrics(compared)
    assert compared["overall"]["age_bin_accuracy"]["paired"]["reason"] == (
        "no pair with its age measured by bin in both runs"
    )
    unlabelled = _runs(slice_by=[]).contents | {}
    for entry in unlabelled["overall"].values():
        entry |= {"n_a": 0, "n_b": 0}
    assert "age_mae" in shown_metrics(unlabelled) and "age_bin_accuracy" not in shown_metrics(unlabelled)


def test_a_pair_labelled_with_a_bin_in_one_run_and_an_exact_age_in_the_other_counts_for_neither():
    """Each run's own labels: the same image may carry an exact age in A and a bin in B; no age metric can be
    measured on such a pair for both runs, so it is left out of every age metric's pairs."""
    a = Run(Path("a.parquet"), _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours"))
    b = Run(Path("b.parquet"), _binned(_frame(_paths(), B_GENDER, B_RACE, B_AGE_ERROR, "theirs")))
    overall = compare_runs(a, b).contents["overall"]
    assert (overall["age_mae"]["n_a"], overall["age_mae"]["n_b"]) == (8, 0)
    assert (overall["age_bin_accuracy"]["n_a"], overall["age_bin_accuracy"]["n_b"]) == (0, 8)
    for name in ("age_mae", "age_bin_accuracy"):
        assert overall[name]["paired"]["n"] == 0
        assert overall[name]["paired"]["reason"] == "A's ages in years, B's by bin"
    assert overall["gender_accuracy"]["paired"]["n"] == 8


def test_a_compare_of_binned_runs_prints_and_shows_the_age_bin_row(tmp_path):
    paths = {}
    for run in _binned_runs():
        paths[run.predictions.stem] = tmp_path / run.predictions.name
        frame = run.frame.with_columns(
            pl.lit(None, dtype).alias(c) for c, dtype in PREDICTION_FIELDS.items() if c not in run.frame
        )  # as predict writes it: every schema column, the bins among the true labels
        pq.write_table(frame.select(list(PREDICTION_FIELDS)).to_arrow(), paths[run.predictions.stem])
    args = ["report", str(paths["a"]), "--compare", str(paths["b"]), "--report", str(tmp_path / "rep")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.strip().startswith("age in bin"))
    assert [cell.strip() for cell in row.split("│")][1:4] == ["100.0%", "50.0%", "-50.0 pts"], row
    assert "age MAE" not in result.output
    page = (tmp_path / "rep" / "report.html").read_text()
    overall = page[page.index("<h3>Overall</h3>") : page.index("<h3>by ")]
    assert "age in bin" in overall and "age MAE" not in overall and "n = 8" in overall
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())["compare"]["overall"]["age_bin_accuracy"]
    assert (saved["a"], saved["b"], saved["paired"]["n"]) == (1.0, 0.5, 8)


@pytest.mark.parametrize("binned", [False, True], ids=["ages in years", "ages as bins"])
def test_swapping_the_runs_negates_every_difference(binned):
    """B - A of (A, B) is minus that of (B, A), metric by metric, with the counts swapped and the same pairs: the
    comparison treats its two runs alike (the paired intervals too, up to resampling: same seed, same draws)."""
    a = Run(Path("a.parquet"), _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours"))
    b = Run(Path("b.parquet"), _frame(_paths(), B_GENDER, B_RACE, B_AGE_ERROR, "theirs"))
    if binned:
        a, b = _binned_runs()
    forward, backward = compare_runs(a, b).contents, compare_runs(b, a).contents
    compared = 0
    for name, entry in forward["overall"].items():
        other = backward["overall"][name]
        assert (entry["n_a"], entry["n_b"]) == (other["n_b"], other["n_a"]), name
        assert entry["paired"]["n"] == other["paired"]["n"], name
        if entry["diff"] is None:
            assert other["diff"] is None, name
            continue
        compared += 1
        assert entry["diff"] == pytest.approx(-other["diff"]), name
        if entry["paired"]["low"] is not None:
            assert entry["paired"]["low"] == pytest.approx(-other["paired"]["high"]), name
            assert entry["paired"]["high"] == pytest.approx(-other["paired"]["low"]), name
    assert compared >= (20 if not binned else 15)
    assert shown_metrics(forward) == shown_metrics(backward)


def _predicted_bins(frame: pl.DataFrame, ends: list[tuple[int, int]]) -> pl.DataFrame:
    """``frame`` with its predicted ages as bins only (FairFace's classifier): ``ends`` per row, no age in years."""
    low, high = zip(*ends, strict=True)
    return frame.with_columns(
        pl.Series("pred_age_low", low, PREDICTION_FIELDS["pred_age_low"]),
        pl.Series("pred_age_high", high, PREDICTION_FIELDS["pred_age_high"]),
        pl.lit(None, PREDICTION_FIELDS["pred_age"]).alias("pred_age"),
    ).with_columns(derived_columns())


def test_ages_in_years_against_predicted_bins_disagree_by_the_nearer_end():
    """Ours (years) against FairFace's classifier (bins) on labels in years: the disagreements read "age (> 10 y)
    0 of 0", and the unpaired reason said "no labelled image that both runs predict it on" though both did."""
    a = Run(Path("a.parquet"), _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours"))  # 21 29 42 48 60 25 38 42
    bins = [(20, 29), (30, 39), (30, 39), (50, 59), (80, MAX_AGE), (20, 29), (30, 39), (40, 49)]
    b = Run(Path("b.parquet"), _predicted_bins(_frame(_paths(), B_GENDER, B_RACE, B_AGE_ERROR, "theirs"), bins))
    comparison = compare_runs(a, b)
    contents = comparison.contents
    # nearer ends 0, 1, 3, 2, 20, 0, 0, 0 years from A's ages: image 4 (60 against 80+) alone is over 10
    assert contents["disagreements"]["age"] == {"compared": 8, "disagree": 1, "share": 0.125, "as_bins": 8}
    (row,) = contents["gallery"]["age"]
    assert (row["a_age"], row["b_age"], row["b_age_low"], row["b_age_high"], row["difference"]) == (
        60.0, None, 80, MAX_AGE, 20.0,
    )  # fmt: skip
    overall = contents["overall"]
    assert (overall["age_mae"]["n_a"], overall["age_bin_accuracy"]["n_b"]) == (8, 8)
    assert overall["age_bin_accuracy"]["b"] == 0.75  # true 40 is not in 30-39, nor 60 in 80+
    assert overall["age_mae"]["paired"]["reason"] == "no pair with its age measured in years in both runs"
    page = compare_html(contents, comparison.gallery, lambda row: "")
    assert "<b>true 60 · A 60.0 · B 80+</b>" in page
    assert "ages more than 10 years apart (a bin from its nearer end)</td><td>8</td><td>1</td>" in page
    out = Console(record=True, width=200)
    compared_runs(out, contents)
    assert "age (> 10 y; a bin from its nearer end) 1 of 8" in out.export_text()


def test_ages_in_years_are_put_in_the_other_runs_bins_and_paired():
    """Ours (years) against FairFace's classifier (bins) shared no age metric: "A's ages in years, B's by bin". A's
    ages now go into B's bins too (rounded), so both are measured by the share in the right bin, on the same images,
    with a paired interval; A's MAE stays its own."""
    a = Run(Path("a.parquet"), _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours"))  # 21 29 42 48 60 25 38 42
    bins = [(20, 29), (30, 39), (30, 39), (50, 59), (80, MAX_AGE), (20, 29), (30, 39), (40, 49)]
    b = Run(Path("b.parquet"), _predicted_bins(_frame(_paths(), B_GENDER, B_RACE, B_AGE_ERROR, "theirs"), bins))
    comparison = compare_runs(a, b)
    contents = comparison.contents
    assert contents["age_bins"] == {"binned": "A", "bins": ["20-29", "30-39", "40-49", "50-59", "80+"]}
    in_bin = contents["overall"]["age_bin_accuracy"]
    # A, against true 20 30 40 50 60 25 35 45: hits on 0, 2, 5, 6, 7; 29 and 48 miss; 60 is in none of B's bins
    assert (in_bin["n_a"], in_bin["a"]) == (7, pytest.approx(5 / 7))
    assert (in_bin["n_b"], in_bin["b"]) == (8, 0.75)
    paired = in_bin["paired"]  # the 7 images both measure: B hits 6 of them (not image 2)
    assert (paired["n"], paired["diff"]) == (7, pytest.approx(6 / 7 - 5 / 7))
    assert paired["low"] is not None and paired["low"] <= paired["diff"] <= paired["high"]
    assert contents["overall"]["age_mae"]["a"] == pytest.approx(1.5) and contents["overall"]["age_mae"]["n_b"] == 0
    assert a.frame["pred_age_low"].null_count() == 8  # the caller's run is left as it was
    out = Console(record=True, width=200)
    compared_runs(out, contents)
    assert "age in bin: A's ages in years put in B's bins (20-29, 30-39, 40-49, 50-59, 80+)" in out.export_text()
    page = compare_html(contents, comparison.gallery, lambda row: "")
    assert "age in bin: A's ages in years put in B's bins (20-29, 30-39, 40-49, 50-59, 80+)" in page
    swapped = compare_runs(b, a).contents
    assert swapped["age_bins"]["binned"] == "B"
    assert swapped["overall"]["age_bin_accuracy"]["paired"]["diff"] == pytest.approx(-paired["diff"])


def test_a_labelled_bin_and_a_predicted_bin_show_as_bins_in_the_gallery():
    a, b = _binned_runs()
    far = [(20, 29), (30, 39), (40, 49), (50, 59), (30, 39), (20, 29), (30, 39), (40, 49)]
    b = Run(b.predictions, _predicted_bins(b.frame, far))
    comparison = compare_runs(a, b)
    # image 4: A 60, B 30-39, 21 years from its nearer end; labelled 55-64
    assert comparison.contents["disagreements"]["age"] | {"share": None} == {
        "compared": 8, "disagree": 1, "share": None, "as_bins": 8,
    }  # fmt: skip
    page = compare_html(comparison.contents, comparison.gallery, lambda row: "")
    assert "<b>true 55\u201164 · A 60.0 · B 30\u201139</b>" in page  # non-breaking hyphens


def test_a_run_without_labels_leaves_no_labelled_pair_and_says_so():
    """A labelled (by a labels file at predict time), B not: the reason read "no labelled image that either run
    predicts it on", though A predicts every attribute on 8 labelled images."""
    a = Run(Path("a.parquet"), _frame(_paths(), A_GENDER, A_RACE, A_AGE_ERROR, "ours"))
    b = Run(Path("b.parquet"), _frame(_paths(), B_GENDER, B_RACE, B_AGE_ERROR, "theirs", true=False))
    contents = compare_runs(a, b).contents
    assert (contents["shared"]["pairs"], contents["shared"]["labelled_pairs"]) == (8, 0)
    for name in ("gender_accuracy", "race_accuracy", "age_mae"):
        assert contents["overall"][name]["paired"]["reason"] == "no pair labelled in both runs"


def test_runs_of_the_same_files_in_other_folders_pair_by_file_name(tmp_path):
    """The other tool ran on a copy of the folder (another machine, a mounted path): no path in both, so every
    difference stood unpaired with "no image is in both runs". A file name one path holds in each run pairs them;
    a name two of B's paths hold pairs with neither."""
    b_paths = [f"D:\\copy\\p{i}.jpg" for i in range(7)] + ["/elsewhere/p6.jpg"]  # p6 twice in B; p7 absent
    comparison = _runs(b_paths)
    shared = comparison.contents["shared"]
    assert (shared["matched_by"], shared["images"], shared["pairs"], shared["only_b"]) == ("file name", 6, 6, 2)
    assert comparison.contents["overall"]["gender_accuracy"]["paired"]["n"] == 6
    assert set(comparison.gallery["age"]["path"]) <= set(_paths())  # A's paths stand for both
    out = Console(record=True, width=200)
    compared_runs(out, comparison.contents)
    assert "6 images in both runs (matched by file name: no path is in both), 6 pairs (6 labelled)" in (
        out.export_text()
    )
    assert "6 images in both runs (matched by file name)" in compare_html(comparison.contents, comparison.gallery, str)


def test_a_shared_path_keeps_the_matching_by_path():
    b_paths = [_paths()[0]] + [f"/copy/p{i}.jpg" for i in range(1, 8)]  # one path in both: the rest are not pairs
    shared = _runs(b_paths).contents["shared"]
    assert (shared["matched_by"], shared["images"], shared["pairs"]) == ("path", 1, 1)


def test_fairface_detected_faces_pair_with_their_photos_by_stem():
    """FairFace's predict.py reports the faces it detects, written as detected_faces/<stem>_face<k>.<ext>: no path
    or file name of ours matches, so nothing paired. The stem does, where one path holds it in each run: a photo
    with two detected faces (p6_face0, p6_face1) pairs with neither."""
    b_paths = [f"/run/detected_faces/p{i}_face0.jpg" for i in range(7)] + ["/run/detected_faces/p6_face1.jpg"]
    comparison = _runs(b_paths)
    shared = comparison.contents["shared"]
    assert (shared["matched_by"], shared["images"], shared["pairs"], shared["only_b"]) == ("file name stem", 6, 6, 2)
    out = Console(record=True, width=200)
    compared_runs(out, comparison.contents)
    assert "6 images in both runs (matched by file name stem: no path is in both), 6 pairs" in out.export_text()
