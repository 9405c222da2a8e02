"""Suspect labels (``metrics.suspects``) on seeded synthetic predictions: injected label errors are found, the
model's own age bias is not mistaken for them, and too little data examines nothing and says why."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics.suspects import class_thresholds, duplicate_conflicts, suspect_labels
from faceattr_batch.schema import RACE_PROB_COLUMNS

N_ROWS = 2000
FLIP_SHARE = 0.05


def _class_probs(rng: np.random.Generator, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """A model right on 90% of rows, confident when right (1 - Beta(1, 40) on the truth: mean 0.976, like a good
    model on its easy faces) and unsure when wrong (0.4-0.6 on a wrong class, 0.25-0.35 left on the truth); the rest
    spread over the other classes."""
    n = len(truth)
    right = rng.random(n) < 0.9
    wrong_class = (truth + rng.integers(1, n_classes, n)) % n_classes
    top = np.where(right, truth, wrong_class)
    p_top = np.where(right, 1 - rng.beta(1, 40, n), rng.uniform(0.4, 0.6, n))
    p_truth = np.where(right, p_top, rng.uniform(0.25, 0.35, n))
    probs = rng.dirichlet(np.ones(n_classes), n)
    probs[np.arange(n), top] = 0
    probs[np.arange(n), truth] = 0
    rest = np.where(right, 1 - p_top, 1 - p_top - p_truth)
    probs *= (rest / np.maximum(probs.sum(axis=1), 1e-12))[:, None]
    probs[np.arange(n), top] = p_top
    probs[np.arange(n), truth] = p_truth
    return probs


def _flip(rng: np.random.Generator, truth: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    flipped = rng.random(len(truth)) < FLIP_SHARE
    moved = (truth + rng.integers(1, n_classes, len(truth))) % n_classes
    return np.where(flipped, moved, truth), flipped


@pytest.fixture(scope="module")
def noisy_classes() -> tuple[pl.DataFrame, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(20)
    gender = rng.integers(0, 2, N_ROWS)
    race = rng.choice(5, N_ROWS, p=[0.4, 0.2, 0.15, 0.15, 0.1])
    gender_probs, race_probs = _class_probs(rng, gender, 2), _class_probs(rng, race, 5)
    given_gender, gender_flipped = _flip(rng, gender, 2)
    given_race, race_flipped = _flip(rng, race, 5)
    frame = pl.DataFrame(
        {
            "path": [f"{i:05d}.jpg" for i in range(N_ROWS)],
            "true_gender": pl.Series(given_gender, dtype=pl.Int8),
            "p_female": pl.Series(gender_probs[:, 1], dtype=pl.Float32),
            "true_race": pl.Series(given_race, dtype=pl.Int8),
            **{name: pl.Series(race_probs[:, j], dtype=pl.Float32) for j, name in enumerate(RACE_PROB_COLUMNS)},
        }
    )
    return frame, gender, race, {"gender": gender_flipped, "race": race_flipped}


@pytest.mark.parametrize("attribute", ["gender", "race"])
def test_flipped_labels_are_found_with_their_original_label_suggested(noisy_classes, attribute):
    frame, gender, race, flipped = noisy_classes
    result, summary = suspect_labels(frame)
    flagged = result[f"{attribute}_suspect"].to_numpy()
    truly = flipped[attribute]
    recall = (flagged & truly).sum() / truly.sum()
    precision = (flagged & truly).sum() / flagged.sum()
    assert recall >= 0.7 and precision >= 0.5, (recall, precision)
    original = {"gender": gender, "race": race}[attribute]
    suggested = result[f"{attribute}_suggested"].to_numpy()
    assert (suggested[flagged & truly] == original[flagged & truly]).mean() >= 0.95
    assert summary[attribute]["examined"] == N_ROWS and summary[attribute]["reason"] is None
    assert summary[attribute]["flagged"] == flagged.sum()
    # the score ranks: flipped rows score higher than the rest on the whole
    score = result[f"{attribute}_score"].to_numpy()
    assert np.median(score[truly]) > np.percentile(score[~truly], 90)
    assert result["path"].to_list() == frame["path"].to_list()


def _ages(rng: np.random.Generator, n: int) -> pl.DataFrame:
    """A model whose 10th-90th interval is honest (+-1.28 sd of 3 years) but which reads faces over 40 younger, the
    older the more: 10 years at 65, 20 at 90."""
    truth = rng.integers(1, 91, n)
    pred = truth - np.clip(truth - 40, 0, None) * 0.4 + rng.normal(0, 3, n)
    half = 1.2816 * 3
    return pl.DataFrame(
        {
            "true_age": pl.Series(truth, dtype=pl.Int16),
            "pred_age": pl.Series(pred, dtype=pl.Float32),
            "age_low": pl.Series(pred - half, dtype=pl.Float32),
            "age_high": pl.Series(pred + half, dtype=pl.Float32),
        }
    )


def test_a_band_wide_age_bias_flags_few_old_faces_while_a_label_moved_30_years_is_flagged():
    rng = np.random.default_rng(21)
    frame = _ages(rng, N_ROWS)
    truth = frame["true_age"].to_numpy()
    pred = frame["pred_age"].to_numpy()
    old = truth >= 60
    # the fixture matters: judged by the interval alone, many old faces would be beyond 4 sd
    assert (np.abs(truth - pred)[old] / 3 > 4).mean() > 0.2
    moved = rng.random(N_ROWS) < FLIP_SHARE
    given = np.where(moved, np.where(truth >= 50, truth - 30, truth + 30), truth)
    frame = frame.with_columns(true_age=pl.Series(given, dtype=pl.Int16))
    result, summary = suspect_labels(frame)
    flagged = result["age_suspect"].to_numpy()
    assert flagged[old & ~moved].mean() < 0.02
    assert flagged[moved].mean() >= 0.95
    assert (flagged & moved).sum() / flagged.sum() >= 0.9
    assert result["age_suggested"].to_list() == np.round(pred).astype(int).tolist()
    assert summary["age"]["examined"] == N_ROWS and summary["age"]["reason"] is None
    assert summary["age"]["bands"]["60-69"]["from"] == "band"
    assert summary["age"]["bands"]["60-69"]["median"] > 1  # read younger: the label sits above the prediction
    tail = result["age_tail_p"].to_numpy()
    # (a face of 80 read as 60 and labelled 50 is only 10 years off: not every moved label can be far)
    assert np.median(tail[moved]) < 1e-6 and np.median(tail[~moved]) > 0.3


def test_a_sparse_age_band_falls_back_to_the_global_median_and_mad():
    rng = np.random.default_rng(22)
    frame = _ages(rng, 400).filter(pl.col("pred_age") < 80)
    old = {"true_age": pl.lit(85, pl.Int16), "pred_age": pl.lit(84.0, pl.Float32)}
    frame = pl.concat(
        [frame, frame.head(3).with_columns(**old, age_low=pl.lit(80.0, pl.Float32), age_high=pl.lit(88.0, pl.Float32))]
    )
    _, summary = suspect_labels(frame)
    bands = summary["age"]["bands"]
    assert "80+" in summary["age"]["fallback_bands"] and "30-39" not in summary["age"]["fallback_bands"]
    assert bands["80+"]["n"] == 3 and bands["80+"]["median"] == summary["age"]["global"]["median"]


def test_thresholds_and_the_pruned_joint_match_a_hand_computation():
    frame = pl.DataFrame({"true_gender": [0, 0, 0, 1, 1], "p_female": [0.2, 0.98, 0.1, 0.9, 0.7]})
    result, summary = suspect_labels(frame, min_per_class=2)
    # t_male = mean(0.8, 0.02, 0.9) = 0.5733; t_female = mean(0.9, 0.7) = 0.8
    assert summary["gender"]["thresholds"] == pytest.approx({"male": (0.8 + 0.02 + 0.9) / 3, "female": 0.8})
    # confident joint: rows 0, 2 (male, male); row 1 (male -> female: p_female 0.98 >= 0.8); row 3 (female,
    # female); row 4 passes neither threshold. Calibrated: [[2, 1], [0, 2]]: one male label estimated wrong, the one
    # with the largest p_female - p_male (row 1); p_male 0.02 < 0.1 x 0.5733 and female is the top class: suspect
    assert summary["gender"]["estimated_errors"] == 1
    assert result["gender_suspect"].to_list() == [False, True, False, False, False]
    assert result["gender_suggested"].to_list() == [0, 1, 0, 1, 1]
    assert result["gender_score"].to_list() == pytest.approx([0.2, 0.98, 0.1, 0.1, 0.3])  # 1 - p(given label)
    strict, _ = suspect_labels(frame, min_per_class=2, given_ratio=0.01)  # 0.02 is not under 0.0057
    assert not strict["gender_suspect"].any()
    probs = np.array([[0.8, 0.2], [0.15, 0.85], [0.1, 0.9], [0.3, 0.7]])
    thresholds, counts = class_thresholds(np.array([0.0, 0.0, 1.0, 1.0]), probs, 2)
    assert thresholds.tolist() == pytest.approx([0.475, 0.8]) and counts.tolist() == [2, 2]


def test_one_gender_class_examines_no_gender_and_says_why(noisy_classes):
    frame = noisy_classes[0].with_columns(true_gender=pl.lit(1, pl.Int8))
    result, summary = suspect_labels(frame)
    assert result["gender_suspect"].null_count() == frame.height
    assert summary["gender"]["flagged"] == 0 and summary["gender"]["examined"] == 0
    assert "1 of 2 gender classes" in summary["gender"]["reason"] and "male 0" in summary["gender"]["reason"]
    assert summary["race"]["reason"] is None  # the other attributes are still examined


def test_three_labelled_rows_flag_nothing_and_give_reasons():
    frame = pl.DataFrame(
        {
            "true_gender": [0, 1, 0],
            "p_female": [0.9, 0.1, 0.2],
            "true_race": [0, 1, 2],
            **{name: [0.2] * 3 for name in RACE_PROB_COLUMNS},
            "true_age": [5, 40, 90],
            "pred_age": [60.0, 10.0, 30.0],
            "age_low": [55.0, 5.0, 25.0],
            "age_high": [65.0, 15.0, 35.0],
        }
    )
    result, summary = suspect_labels(frame)
    for attribute in ("gender", "race", "age"):
        assert result[f"{attribute}_suspect"].null_count() == 3
        assert summary[attribute]["flagged"] == 0 and summary[attribute]["reason"]
    assert "3 age-labelled rows" in summary["age"]["reason"]


def test_missing_race_labels_and_columns_are_not_examined(noisy_classes):
    frame = noisy_classes[0].with_columns(true_race=pl.lit(None, pl.Int8)).drop("p_female")
    result, summary = suspect_labels(frame)
    assert summary["race"]["reason"] == "no row has a race label" and summary["race"]["labelled"] == 0
    assert summary["gender"]["reason"].startswith("no gender-labelled row has")
    assert summary["gender"]["not_examined"]["no prediction"] == frame.height
    assert summary["age"]["reason"] == "no row has an age label"
    assert result.null_count().drop("path").row(0) == (frame.height,) * (result.width - 1)


def test_a_row_without_a_prediction_is_not_examined_but_the_others_are(noisy_classes):
    first_five = pl.int_range(pl.len()) < 5
    frame = noisy_classes[0].with_columns(
        p_female=pl.when(first_five).then(None).otherwise("p_female"),
        true_race=pl.when(first_five).then(9).otherwise("true_race").cast(pl.Int8),
    )
    result, summary = suspect_labels(frame)
    assert summary["race"]["not_examined"] == {"no prediction": 0, "unknown code": 5, "class without threshold": 0}
    assert result["race_suspect"].head(5).null_count() == 5
    assert result["gender_suspect"].head(5).null_count() == 5 and result["gender_suspect"][5:].null_count() == 0
    assert summary["gender"]["not_examined"]["no prediction"] == 5
    assert summary["gender"]["examined"] == frame.height - 5


def test_bad_options_are_refused():
    with pytest.raises(FaceattrError, match="min_per_class must be at least 2"):
        suspect_labels(pl.DataFrame(), min_per_class=1)
    with pytest.raises(FaceattrError, match="age_threshold must be a positive"):
        suspect_labels(pl.DataFrame(), age_threshold=0)
    with pytest.raises(FaceattrError, match=r"given_ratio must be in \(0, 1\]"):
        suspect_labels(pl.DataFrame(), given_ratio=0)


def test_an_age_within_five_years_of_the_prediction_is_never_suspect():
    """At 0-2 the predicted interval is under a year wide: a baby labelled 1 and read 2.4 sits many sigmas out,
    yet a label within CS@5's 5 years is no suspect (score 0); 30 years off still is."""
    rng = np.random.default_rng(3)
    true = np.concatenate([rng.integers(20, 60, 60), np.ones(30, dtype=int), [40]])
    pred = np.concatenate([true[:60] + rng.normal(0, 3, 60), rng.uniform(0.5, 1.5, 30), [10.0]])
    pred[60:65] = 2.4  # five babies read 1.4 years older than labelled, far outside their narrow interval
    width = np.concatenate([np.full(60, 4.0), np.full(30, 0.3), [4.0]])
    frame = pl.DataFrame({"true_age": true, "pred_age": pred, "age_low": pred - width, "age_high": pred + width}).cast(
        {"true_age": pl.Int16, "pred_age": pl.Float32, "age_low": pl.Float32, "age_high": pl.Float32}
    )
    flags, summary = suspect_labels(frame)
    assert not flags["age_suspect"][60:90].any() and (flags["age_score"][60:65] == 0).all()
    assert flags["age_suspect"][90] and summary["age"]["flagged"] == 1


def test_duplicate_conflicts_suggest_the_group_label_its_mean_prediction_favours():
    frame = pl.DataFrame(
        {
            "dup_group": [1, 1, 2, 2, 3],
            "true_gender": [0, 1, 0, 0, 1],
            "p_female": [0.9, 0.8, 0.1, 0.2, 0.5],
            "true_race": [4, 1, 2, 2, None],
            "p_white": [0.1, 0.1, 0.0, 0.0, 0.2],
            "p_black": [0.7, 0.5, 0.0, 0.0, 0.2],
            "p_asian": [0.0, 0.0, 1.0, 1.0, 0.2],
            "p_indian": [0.0, 0.0, 0.0, 0.0, 0.2],
            "p_others": [0.2, 0.4, 0.0, 0.0, 0.2],
            "true_age": [86, 100, 10, 13, 5],
            "pred_age": [95.0, 93.0, 12.0, 12.0, 5.0],
        },
        schema_overrides={"true_gender": pl.Int8, "true_race": pl.Int8, "true_age": pl.Int16},
    )
    found = duplicate_conflicts(frame)
    # group 1: mean P(female) 0.85 -> female; mean P(Black) 0.6 > P(Others) 0.3 -> Black; mean age 94 -> 100
    assert found.row(0, named=True) == {
        "gender_group_labels": "male, female",
        "gender_group_suggested": 1,
        "race_group_labels": "Black, Others",
        "race_group_suggested": 1,
        "age_group_labels": "86, 100",
        "age_group_suggested": 100,
    }
    assert found["age_group_labels"].to_list() == ["86, 100", "86, 100", "10, 13", "10, 13", None]
    assert found["age_group_suggested"].to_list() == [100, 100, 13, 13, None]  # mean 12: 13 is nearer than 10
    assert found["gender_group_labels"].to_list()[2:] == [None, None, None]  # group 2 agrees on gender
    without_predictions = duplicate_conflicts(frame.drop("pred_age"))
    assert without_predictions["age_group_labels"].to_list()[:2] == ["86, 100"] * 2
    assert without_predictions["age_group_suggested"].null_count() == 5
    assert duplicate_conflicts(frame.drop("dup_group")).null_count().row(0) == (5,) * 6
