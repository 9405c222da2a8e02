"""The report folder's fairness parts (reporting.folder.write_report with slice_by and min_group): metrics.json's
fairness summaries equal fairness_summary on the same frame, extra attributes alone and crossed in
breakdown.parquet, no macro-F1 inside a race slice, a t interval for a 2-row MAE, and the page's sections."""

from __future__ import annotations

import io
import json
import math
import sys

import numpy as np
import polars as pl
import pytest
from conftest import make_faces
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import finite
from faceattr_batch.metrics import attributes, slicing
from faceattr_batch.metrics.fairness import fairness_summary
from faceattr_batch.reporting.folder import write_report
from faceattr_batch.reporting.summary import labelled_rows, summarize
from faceattr_batch.schema import PREDICTION_FIELDS, RACE_PROB_COLUMNS, derived_columns, with_age_bins

MIN_GROUP = 30
SOURCES = {"lab": 110, "web": 100, "phone": 12}  # phone: under MIN_GROUP
PAIR_ERRORS = (11.52, 18.41)  # the two Indian men of 85: the only rows of their slice (the n = 2 MAE)


def _frame() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    n = sum(SOURCES.values()) + 6  # 6 rows without a source
    true_gender = rng.integers(0, 2, n)
    true_race = rng.choice([0, 1, 2, 4], n)  # Indian only in the pair below
    true_age = rng.integers(1, 80, n)
    probs = rng.dirichlet(np.ones(5), n)
    source = [s for s, count in SOURCES.items() for _ in range(count)] + [None] * 6
    web = np.array([s == "web" for s in source])
    gender_right = rng.random(n) < np.where(web, 0.7, 0.95)  # web is worse at gender
    pred_gender = np.where(gender_right, true_gender, 1 - true_gender)
    pred_race = np.where(rng.random(n) < 0.85, true_race, rng.integers(0, 5, n))
    rows = {
        "path": [f"/nowhere/{i:04d}.jpg" for i in range(n)] + ["/nowhere/pair0.jpg", "/nowhere/pair1.jpg"],
        "true_gender": [*true_gender, 0, 0],
        "pred_gender": [*pred_gender, 0, 0],
        "p_female": [*np.where(pred_gender == 1, 0.8, 0.2), 0.1, 0.1],
        "true_race": [*true_race, 3, 3],
        "pred_race": [*pred_race, 3, 3],
        **{name: [*probs[:, i], *[float(i == 3)] * 2] for i, name in enumerate(RACE_PROB_COLUMNS)},
        "true_age": [*true_age, 85, 85],
        "pred_age": [*(true_age + rng.normal(0, 5, n)), 85 + PAIR_ERRORS[0], 85 - PAIR_ERRORS[1]],
        "source": [*source, "lab", "lab"],
        "brightness": [*rng.uniform(0, 1, n), 0.5, 0.5],
    }  # fmt: skip
    frame = pl.DataFrame(rows).with_columns(
        age_low=pl.col("pred_age") - 5,
        age_high=pl.col("pred_age") + 5,
        error=pl.lit(None, pl.String),
        model_name=pl.lit("test"),
        model_version=pl.lit("1"),
    )
    unknown = pl.int_range(pl.len()) % 50 == 3  # a few rows without a brightness: in no brightness group
    frame = frame.with_columns(pl.when(unknown).then(None).otherwise(pl.col("brightness")).alias("brightness"))
    bad = pl.DataFrame({"path": ["/nowhere/empty.jpg"], "error": ["empty file (0 bytes)"]})
    frame = pl.concat([frame, bad], how="diagonal_relaxed")
    codes = {c: PREDICTION_FIELDS[c] for c in ("true_gender", "pred_gender", "true_race", "pred_race", "true_age")}
    frame = with_age_bins(frame.with_columns(pl.col(c).cast(t) for c, t in codes.items()))
    return frame.with_columns(derived_columns())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    frame = _frame()
    folder = tmp_path_factory.mktemp("fair") / "rep"
    page = write_report(
        frame, summarize(frame), folder / "p.parquet", folder, slice_by=["source", "brightness:4"], min_group=MIN_GROUP
    )
    saved = json.loads((folder / "metrics.json").read_text())
    return frame, saved, pl.read_parquet(folder / "breakdown.parquet"), page.read_text()


def _as_saved(summary: dict) -> dict:
    return json.loads(json.dumps(finite(summary), default=str))


def test_fairness_in_metrics_json_is_fairness_summary_of_the_same_frame(report):
    frame, saved, _, _ = report
    labelled = labelled_rows(frame)
    assert list(saved["fairness"]) == ["race", "gender", "age_band", "source", "brightness"]
    assert saved["min_group"] == MIN_GROUP
    assert saved["slice_by"][3:] == [
        {"attribute": "source", "column": "source", "bins": None},
        {"attribute": "brightness", "column": "brightness", "bins": 4},
    ]
    assert saved["fairness"]["source"] == _as_saved(fairness_summary(labelled, "source", min_group=MIN_GROUP))
    assert saved["fairness"]["race"] == _as_saved(fairness_summary(labelled, "true_race_label", min_group=MIN_GROUP))
    binned, _ = slicing.slice_frame(labelled, ["brightness:4"])
    assert saved["fairness"]["brightness"] == _as_saved(fairness_summary(binned, "brightness", min_group=MIN_GROUP))
    source = saved["fairness"]["source"]
    # the gender gap: lab (95% right by construction) against web (70%), phone too few to compare
    gap = source["gaps"]["gender_accuracy"]
    assert (gap["max_group"], gap["min_group"], gap["significant"]) == ("lab", "web", True)
    web = labelled.filter(pl.col("source") == "web")
    lab = labelled.filter(pl.col("source") == "lab")
    accuracy = [(part["true_gender"] == part["pred_gender"]).mean() for part in (lab, web)]
    assert gap["gap"] == pytest.approx(accuracy[0] - accuracy[1])
    assert source["too_few"] == [{"group": "phone", "n": SOURCES["phone"]}]
    assert {"group": "phone", "n": 12, "reason": f"fewer than {MIN_GROUP}"} in gap["left_out"]
    assert all(row["group"] != "phone" for rows in source["weakest"].values() for row in rows)
    # brightness quartiles: four bins of about a quarter each, in order
    groups = [g["group"] for g in saved["fairness"]["brightness"]["groups"]]
    assert len(groups) == 4 and groups[0].startswith("[0") and groups[-1].endswith("]")
    # per-group confusion matrices, one per group of each attribute, summing to its images
    confusion = saved["group_confusion"]["source"]
    assert [g["group"] for g in confusion] == ["lab", "phone", "web"]
    assert [sum(map(sum, g["gender"])) for g in confusion] == [SOURCES["lab"] + 2, SOURCES["phone"], SOURCES["web"]]


def test_no_macro_f1_inside_a_race_slice_and_a_t_interval_at_n_2(report):
    _, saved, breakdown, _ = report
    assert all("race_macro_f1" not in row for row in saved["by_race"])
    assert all("gender_f1" not in row for row in saved["by_gender"])
    assert all("race_macro_f1" in row for row in saved["by_source"])  # meaningful across races
    assert "race_macro_f1" not in breakdown.columns
    for rows in saved["slices"].values():
        assert all("race_macro_f1" not in row for row in rows)
    pair = breakdown.filter((pl.col("slices") == "race,gender,age_band") & (pl.col("race") == "Indian")).row(
        0, named=True
    )
    assert (pair["gender"], pair["age_band"], pair["n_age"]) == ("male", "80+", 2)
    mae, sd = np.mean(PAIR_ERRORS), np.std(PAIR_ERRORS, ddof=1)
    t_half, normal_half = 12.7062047 * sd / math.sqrt(2), attributes.Z95 * sd / math.sqrt(2)
    assert pair["age_mae"] == pytest.approx(mae, abs=1e-4)
    assert pair["age_mae_high"] == pytest.approx(mae + t_half, abs=1e-3)
    assert pair["age_mae_low"] == 0.0  # clipped: mae - t_half < 0
    assert abs(pair["age_mae_high"] - (mae + normal_half)) > 10  # not the normal approximation's 21.7
    ones = breakdown.filter(pl.col("n_age") == 1)
    assert ones.height and ones["age_mae_low"].is_null().all()
    assert set(ones["age_mae_interval"]) == {"not computed (n = 1)"}


def test_breakdown_parquet_holds_each_extra_attribute_crossed(report):
    frame, saved, breakdown, _ = report
    labelled = labelled_rows(frame)
    assert breakdown["slices"].unique(maintain_order=True).to_list() == [
        "race,gender,age_band", "source,race,gender,age_band", "brightness,race,gender,age_band",
    ]  # fmt: skip
    crossed = breakdown.filter(pl.col("slices") == "source,race,gender,age_band")
    assert set(crossed["source"]) == set(SOURCES)
    assert crossed["n"].sum() == labelled.filter(pl.col("source").is_not_null()).height
    for source, count in SOURCES.items():
        assert crossed.filter(pl.col("source") == source)["n"].sum() == count + 2 * (source == "lab")
    binned = breakdown.filter(pl.col("slices") == "brightness,race,gender,age_band")
    assert binned["brightness"].n_unique() == 4 and binned["source"].is_null().all()
    assert breakdown.filter(pl.col("slices") == "race,gender,age_band")["n"].sum() == labelled.height
    assert [row["source"] for row in saved["by_source"]] == ["lab", "phone", "web"]
    assert len(saved["slices"]["source,race,gender,age_band"]) == crossed.height


def test_page_shows_the_fairness_summary_sortable_tables_and_no_bare_dashes(report):
    _, saved, _, page = report
    assert "Fairness summary" in page and "Significant gaps" in page
    assert "gender accuracy gap" in page  # the lab/web gap, listed among the significant
    assert "too few" in page and "phone (n = 12)" in page
    assert "table.sortable" in page and "<table class='sortable'>" in page
    assert "<select id='cm-pick'>" in page and "Confusion matrices per group" in page
    assert "- – -" not in page and "no interval: not computed (n = 1)" in page
    assert "Weakest slices" in page and "src='http" not in page and "href=" not in page
    weakest = saved["weakest"]
    assert weakest["min_group"] == MIN_GROUP and weakest["ranked"] == 0  # every cell under 30: none ranked
    assert f"No slice has {MIN_GROUP} images or more" in page
    # the metrics the slicing decides: named once per reason (the race precisions were five reasons in a row)
    precisions = ", ".join(f"race precision {race}" for race in ("white", "black", "asian", "indian", "others"))
    assert page.count("its precision is 0 or 1 by design") == 1
    assert f"not compared: {precisions} (each group holds one true race: its precision is 0 or 1 by design)" in page
    assert "not compared: age R² (each group holds its own range of true ages: R² within a range is low" in page


def test_a_bar_counts_the_fairness_slicings_unless_progress_is_off(tmp_path, monkeypatch):
    """Over a million rows each slicing's bootstrap takes minutes: the report said nothing meanwhile."""
    frame = _frame()
    for progress in (True, False):
        log = io.StringIO()
        monkeypatch.setattr(sys, "stderr", log)
        write_report(frame, summarize(frame), tmp_path / "p.parquet", tmp_path / str(progress), progress=progress)
        lines = log.getvalue().splitlines()
        if progress:  # race, gender, age band, then the race x gender x age band cells
            assert [line.split("|")[0] for line in lines] == ["report: fairness:   0%", "report: fairness: 100%"]
            assert lines[-1].split("|")[2].startswith(" 4/4")
        else:
            assert lines == []


def test_weakest_slices_rank_by_the_pessimistic_bound(tmp_path):
    frame = _frame()
    write_report(frame, summarize(frame), tmp_path / "p.parquet", tmp_path, min_group=5)
    weakest = json.loads((tmp_path / "metrics.json").read_text())["weakest"]
    assert weakest["ranked"] > 0
    for name, rows in weakest["metrics"].items():
        assert rows and all(row["n"] >= 5 for row in rows)
        bounds = [row["bound"] for row in rows]
        assert bounds == sorted(bounds, reverse=name == "age_mae")  # highest MAE bound, lowest accuracy bound first
        assert all(row["bound"] == (row["high"] if name == "age_mae" else row["low"]) for row in rows)


def test_a_missing_slice_column_lists_the_labels_columns_not_the_age_bins_they_became(tmp_path):
    frame = _frame().with_columns(true_age_low=pl.lit(None, pl.Int16), true_age_high=pl.lit(None, pl.Int16))
    with pytest.raises(FaceattrError, match=r"the labels' columns are: source, brightness$"):
        write_report(frame, summarize(frame), tmp_path / "p.parquet", tmp_path / "rep", slice_by=["nope"])


@pytest.mark.parametrize(
    ("slice_by", "min_group", "match"),
    [
        (["nope"], 30, r"--slice-by nope: no such column; the labels' columns are: source, brightness"),
        (["brightness:x"], 30, "whole number of at least 2"),
        (["source:4"], 30, "bins need a numeric column; source is String"),
        (["path"], 30, "distinct values"),
        (["race:3"], 30, "built in"),
        ([], 1, "--min-group must be at least 2"),
    ],
)
def test_bad_slices_are_refused_before_anything_is_written(tmp_path, slice_by, min_group, match):
    frame = _frame()
    with pytest.raises(FaceattrError, match=match):
        write_report(frame, summarize(frame), tmp_path / "p.parquet", tmp_path / "rep", slice_by=slice_by,
                     min_group=min_group)  # fmt: skip
    assert not (tmp_path / "rep").exists()


# --- through the CLI -------------------------------------------------------------------------------------------


def test_report_and_predict_take_slice_by_and_min_group(tmp_path, tiny_attr_model):
    frame = _frame()
    predictions = tmp_path / "pred.parquet"
    empty = pl.DataFrame(schema=PREDICTION_FIELDS)
    pl.concat([empty, frame.select(c for c in frame.columns if c in PREDICTION_FIELDS)], how="diagonal_relaxed").cast(
        PREDICTION_FIELDS
    ).write_parquet(predictions)
    labels = tmp_path / "labels.csv"
    frame.filter(pl.col("error").is_null()).select(
        "path", gender="true_gender", race="true_race", age="true_age", source="source", brightness="brightness"
    ).write_csv(labels)
    runner = CliRunner()
    args = ["report", str(predictions), "--report", str(tmp_path / "rep"), "--labels", str(labels)]
    result = runner.invoke(app, [*args, "--slice-by", "source, brightness:4", "--min-group", str(MIN_GROUP)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert list(saved["fairness"]) == ["race", "gender", "age_band", "source", "brightness"]
    assert saved["fairness"]["source"]["too_few"] == [{"group": "phone", "n": SOURCES["phone"]}]
    assert saved["min_group"] == MIN_GROUP and len(saved["by_brightness"]) == 4
    refused = runner.invoke(app, [*args, "--slice-by", "nope"])
    assert refused.exit_code == 2 and "--slice-by nope: no such column; the labels' columns are:" in refused.output
    assert "source" in refused.output and "brightness" in refused.output
    # predict refuses a column its labels lack before predicting anything, and --slice-by without --report
    make_faces(tmp_path / "in", 3)
    out = tmp_path / "out.parquet"
    run = ["predict", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_attr_model), "--workers", "0"]
    refused = runner.invoke(app, [*run, "--labels", str(labels), "--report", str(tmp_path / "r2"), "--slice-by", "x"])
    assert refused.exit_code == 2 and "--slice-by x: no such column" in refused.output and not out.exists()
    fresh = tmp_path / "fresh" / "out.parquet"  # a reviewer's finding: the refusal left -o's new folder behind
    refused = runner.invoke(app, [*run[:3], str(fresh), *run[4:], "--slice-by", "source"])
    assert refused.exit_code == 2 and "--slice-by shapes the report: add --report DIR" in refused.output
    assert not fresh.parent.exists()


def test_a_nan_in_a_slicing_column_is_in_no_group_and_moves_no_bin():
    """A reviewer's finding: a CSV's NaN went into the top quantile bin (and shifted the quantiles), or unbinned
    formed a group called 'nan'; the docs say an empty value is in no group."""
    frame = pl.DataFrame({"brightness": [0.1, 0.2, 0.3, 0.4, float("nan"), float("nan")], "tone": [1.0, 2.0] * 3})
    frame = frame.with_columns(tone=pl.when(pl.int_range(pl.len()) == 0).then(float("nan")).otherwise("tone"))
    binned, _ = slicing.slice_frame(frame, ["brightness:2", "tone"])
    assert binned["brightness"].cast(pl.String).to_list() == ["[0.1, 0.25]", "[0.1, 0.25]", "(0.25, 0.4]",
                                                              "(0.25, 0.4]", None, None]  # fmt: skip
    assert binned["tone"].to_list() == [None, 2.0, 1.0, 2.0, 1.0, 2.0]


def test_slicing_columns_named_like_the_tables_own_or_holding_dollars(tmp_path):
    """A reviewer's findings: a labels column `n` with --slice-by n raised polars' DuplicateError, and group values
    such as `$0_$10` a matplotlib mathtext ParseSyntaxException; both exited 1 with a traceback."""
    frame = _frame()
    clash = frame.with_columns(n=pl.col("source"))
    with pytest.raises(FaceattrError, match="^--slice-by n: a name the report's tables use for their own columns"):
        write_report(clash, summarize(clash), tmp_path / "p.parquet", tmp_path / "a", slice_by=["n"])
    interval = frame.with_columns(gender_accuracy_low=pl.col("source"))  # replaced by the interval's bound, once
    with pytest.raises(FaceattrError, match="^--slice-by gender_accuracy_low: a name the report's tables use"):
        write_report(
            interval, summarize(interval), tmp_path / "p.parquet", tmp_path / "c", slice_by=["gender_accuracy_low"]
        )
    dollars = frame.with_columns(price=pl.col("source").replace({"lab": "$0_$10", "web": "$10_$20"}))
    write_report(dollars, summarize(dollars), tmp_path / "p.parquet", tmp_path / "b", slice_by=["price"])
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [group["group"] for group in saved["fairness"]["price"]["groups"]][:2] == ["$0_$10", "$10_$20"]
    assert (tmp_path / "b" / "calibration_by_price.png").stat().st_size > 0
