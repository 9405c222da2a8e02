"""metrics: each function against values worked out by hand on small frames."""

from __future__ import annotations

import math

import polars as pl
import pytest

from faceattr_batch.metrics import attributes as metrics
from faceattr_batch.schema import derived_columns, with_age_bins

# 6 faces; codes: gender 0 male / 1 female, race 0 White .. 4 Others
FRAME = (
    pl.DataFrame(
        {
            "path": [f"/f/{i}.jpg" for i in range(6)],
            "true_gender": [1, 1, 0, 0, 1, None],
            "pred_gender": [1, 0, 0, 1, 1, 1],
            "p_female": [0.9, 0.2, 0.1, 0.95, 0.6, 0.7],
            "true_race": [0, 0, 1, 2, 2, 4],
            "pred_race": [0, 1, 1, 2, 0, 4],
            "p_white": [0.7, 0.1, 0.2, 0.1, 0.5, 0.0],
            "p_black": [0.1, 0.8, 0.7, 0.1, 0.1, 0.0],
            "p_asian": [0.1, 0.05, 0.05, 0.6, 0.3, 0.1],
            "p_indian": [0.05, 0.05, 0.05, 0.1, 0.05, 0.1],
            "p_others": [0.05, 0.0, 0.0, 0.1, 0.05, 0.8],
            "true_age": [20, 30, 40, 5, 70, None],
            "pred_age": [22.0, 30.0, 52.0, 6.0, 50.0, 33.0],
            "age_low": [18.0, 25.0, 45.0, 1.0, 40.0, 20.0],
            "age_high": [26.0, 35.0, 60.0, 9.0, 60.0, 40.0],
        }
    )
    .pipe(with_age_bins)
    .with_columns(derived_columns())
)  # the label columns predict writes (slices read them)


def test_overall_by_hand():
    m = metrics.overall(FRAME)
    # gender, 5 known: TP=2 (rows 0,4), FN=1 (row 1), FP=1 (row 3), TN=1 (row 2)
    assert m["n_gender"] == 5
    assert m["gender_accuracy"] == pytest.approx(3 / 5)
    assert m["gender_precision"] == pytest.approx(2 / 3)
    assert m["gender_recall"] == pytest.approx(2 / 3)
    assert m["gender_f1"] == pytest.approx(2 / 3)
    # race: correct rows 0,2,3,5 -> 4/6; F1 White 2*1/(2+2)=.5, Black 2/3, Asian 2/3, Others 1 (Indian absent)
    assert m["race_accuracy"] == pytest.approx(4 / 6)
    assert m["race_macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3 + 1) / 4)
    # age errors +2, 0, +12, +1, -20 over 5 known
    assert m["age_mae"] == pytest.approx(35 / 5)
    assert m["age_rmse"] == pytest.approx(math.sqrt((4 + 0 + 144 + 1 + 400) / 5))
    assert m["age_cs5"] == pytest.approx(3 / 5)
    assert m["age_gross_rate"] == pytest.approx(2 / 5)
    assert m["age_bias"] == pytest.approx(-5 / 5)


def test_wilson_interval_matches_the_textbook_values():
    table = pl.DataFrame({"p": [0.5, 0.0, 1.0], "n": [10, 10, 0]})
    low, high = metrics.wilson_interval(pl.col("p"), pl.col("n"))
    rows = table.select(low.alias("low"), high.alias("high")).rows()
    assert rows[0] == pytest.approx((0.2366, 0.7634), abs=1e-4)  # 5/10
    assert rows[1] == pytest.approx((0.0, 0.2775), abs=1e-4)  # 0/10
    assert rows[2] == (None, None)


def test_intervals_overall_and_per_slice():
    m = metrics.overall(FRAME, intervals=True)
    low, high = m["gender_accuracy_low"], m["gender_accuracy_high"]
    assert low < 0.6 < high and (low, high) == pytest.approx((0.2307, 0.8824), abs=1e-4)  # Wilson 3/5
    sd = pl.Series([2.0, 0.0, 12.0, 1.0, 20.0]).std()
    half = 2.776445 * sd / math.sqrt(5)  # Student's t, 4 degrees of freedom, 97.5% (t_quantile: within 0.03%)
    assert (m["age_mae_low"], m["age_mae_high"]) == pytest.approx((max(0.0, 7 - half), 7 + half), rel=1e-3)
    assert m["age_mae_interval"] is None
    table = metrics.breakdown(FRAME, metrics.SLICE_BY, intervals=True)
    assert table.height == 5  # the row without true gender/age is not in any slice
    white_female = table.filter((pl.col("race") == "White") & (pl.col("gender") == "female")).sort("age_band")
    assert white_female["n"].to_list() == [1, 1]
    assert white_female["age_band"].cast(pl.String).to_list() == ["20-29", "30-39"]
    assert {"gender_accuracy_low", "race_accuracy_high", "age_mae_low", "age_cs5_high"} <= set(table.columns)
    assert "_age_abs_error_std" not in table.columns


def test_confusion_matrices():
    race = metrics.confusion_matrix(FRAME)
    assert race[0] == [1, 1, 0, 0, 0] and race[2] == [1, 0, 1, 0, 0] and race[4][4] == 1
    assert metrics.confusion_matrix(FRAME, "gender") == [[1, 1], [1, 2]]


def test_derived_label_columns_follow_the_codes():
    assert FRAME["true_gender_label"].dtype == pl.Enum(["male", "female"])
    assert FRAME["true_gender_label"].to_list() == ["female", "female", "male", "male", "female", None]
    assert FRAME["pred_race_label"].to_list() == ["White", "Black", "Black", "Asian", "White", "Others"]
    assert FRAME["true_age_band"].cast(pl.String).to_list() == ["20-29", "30-39", "40-49", "3-9", "70-79", None]
    assert FRAME["race_correct"].to_list() == [True, False, True, True, False, True]


def test_worst_errors_order_and_confidence():
    worst = metrics.worst_errors(FRAME, k=2)
    assert worst["age"]["path"].to_list() == ["/f/4.jpg", "/f/2.jpg"]  # |-20|, |+12|
    assert worst["gender"]["path"].to_list() == ["/f/3.jpg", "/f/1.jpg"]  # wrong with 0.95, then 0.8
    assert worst["gender"]["confidence"].to_list() == pytest.approx([0.95, 0.8])
    assert worst["race"]["path"].to_list() == ["/f/1.jpg", "/f/4.jpg"]  # wrong with top prob 0.8, then 0.5


def test_calibration_and_interval_coverage():
    tables = metrics.calibration(FRAME, bins=2)
    gender = tables["gender"]  # known rows 0..4: p 0.9,0.2,0.1,0.95,0.6 -> bins [0,.5): 0.2,0.1 ; [.5,1]: rest
    assert gender["n"].to_list() == [2, 3]
    assert gender["confidence"].to_list() == pytest.approx([0.15, (0.9 + 0.95 + 0.6) / 3])
    assert gender["observed"].to_list() == pytest.approx([0.5, 2 / 3])
    # gender ECE over the predicted class's confidence: rows 0..4 confidences .9 .8 .9 .95 .6, correct T F T F T;
    # 15 bins (low, high]: .6 alone, .8 alone, the two .9 together, .95 alone
    ece = metrics.calibration_errors(FRAME)["gender_ece"]
    assert ece == pytest.approx((abs(0.6 - 1) + abs(0.8 - 0) + 2 * abs(0.9 - 1) + abs(0.95 - 0)) / 5)
    # true ages 20 in [18,26], 30 in [25,35], 40 not in [45,60], 5 in [1,9], 70 not in [40,60]
    assert metrics.age_interval_coverage(FRAME) == pytest.approx(3 / 5)


def test_t_quantile_matches_the_tables():
    # Student's t, 97.5% (two-sided 95%), from the printed tables; exact at 1 and 2 degrees of freedom
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423, 1000: 1.9623}
    found = metrics.t_quantile(0.975, list(table))
    assert found == pytest.approx(list(table.values()), rel=1.5e-3)
    assert found[:2] == pytest.approx([12.7062047, 4.3026527], rel=1e-7)


def test_small_slices_get_a_t_interval_or_none_and_no_macro_f1_inside_a_race():
    by_race = metrics.breakdown(FRAME, ["race"], intervals=True)
    assert "race_macro_f1" not in by_race.columns and "gender_f1" in by_race.columns
    assert "gender_f1" not in metrics.breakdown(FRAME, ["gender"]).columns
    white, black = (by_race.filter(pl.col("race") == race).row(0, named=True) for race in ("White", "Black"))
    # White: age errors 2 and 0 -> MAE 1, sd sqrt(2): t(1) 12.71 * sqrt(2) / sqrt(2), not the normal 1.96
    assert (white["age_mae_low"], white["age_mae_high"]) == pytest.approx((0.0, 1 + 12.7062047), rel=1e-6)
    assert white["age_mae_interval"] is None
    assert black["n_age"] == 1 and black["age_mae_low"] is None and black["age_mae_high"] is None
    assert black["age_mae_interval"] == "not computed (n = 1)"
