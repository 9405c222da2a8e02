"""Where two runs' predictions differ (``report --compare``), over every pair (an image with one predicted face in
each run), labelled or not: a different gender, a different race, ages more than ``AGE_DISAGREEMENT`` years apart
(another tool's age predicted as a bin, FairFace's "20-29", counts from its nearer end: "20-29" and 41 are 12 years
apart, "20-29" and "30-39" 1); the largest of each (``GALLERY_K``) are the page's gallery: age by the distance
between the two ages, gender by that between the two P(female), race by the lower of the two confidences (both sure,
and different); a pair without probabilities comes last, then by path."""

from __future__ import annotations

import polars as pl

from faceattr_batch.schema import RACE_PROB_COLUMNS

AGE_DISAGREEMENT = 10  # years between the two predicted ages that count as a disagreement
GALLERY_K = 12


def predicted_once(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of images with exactly one predicted face (the ones a pair can be made of)."""
    predicted = frame.filter(pl.col("error").is_null())
    return predicted.filter(pl.len().over("path") == 1)


def disagreements_between(a: pl.DataFrame, b: pl.DataFrame, pairs: pl.Series) -> tuple[dict, dict[str, pl.DataFrame]]:
    """Counts of pairs whose predictions differ, per attribute, and the largest disagreements of each."""
    top = pl.max_horizontal(RACE_PROB_COLUMNS)
    side = ["pred_gender_label", "pred_race_label", "pred_gender", "pred_race", "pred_age", "p_female",
            "pred_age_low", "pred_age_high"]  # fmt: skip
    theirs = predicted_once(b).select("path", *side, top.alias("race_confidence"))
    joined = (
        predicted_once(a)
        .filter(pl.col("path").is_in(pairs.implode()))
        .with_columns(top.alias("race_confidence"))
        .join(theirs, on="path", suffix="_b")
        .sort("path")
    )
    (low, high), (low_b, high_b) = _age_ends(""), _age_ends("_b")
    age_gap = pl.max_horizontal(low_b - high, low - high_b, pl.lit(0.0))
    joined = joined.with_columns(
        (low.is_not_null() & low_b.is_not_null()).alias("age_predicted"),
        (pl.col("pred_age").is_null() | pl.col("pred_age_b").is_null()).alias("age_as_bin"),
    )
    differ = {
        "gender": pl.col("pred_gender") != pl.col("pred_gender_b"),
        "race": pl.col("pred_race") != pl.col("pred_race_b"),
        "age": age_gap > AGE_DISAGREEMENT,
    }
    rank = {
        "gender": (pl.col("p_female_b") - pl.col("p_female")).abs(),
        "race": pl.min_horizontal("race_confidence", "race_confidence_b"),
        "age": age_gap,
    }
    counts: dict = {"pairs": joined.height, "age_threshold": AGE_DISAGREEMENT}
    gallery = {}
    for key, expr in differ.items():
        both = pl.col(f"pred_{key}").is_not_null() & pl.col(f"pred_{key}_b").is_not_null()
        compared = joined.filter(pl.col("age_predicted") if key == "age" else both)
        wrong = compared.filter(expr).with_columns(rank[key].alias("difference"))
        share = wrong.height / compared.height if compared.height else None
        counts[key] = {"compared": compared.height, "disagree": wrong.height, "share": share}
        gallery[key] = wrong.sort("difference", "path", descending=[True, False], nulls_last=True).head(GALLERY_K)
    counts["age"]["as_bins"] = joined.filter("age_predicted", "age_as_bin").height
    return counts, gallery


def _age_ends(suffix: str) -> tuple[pl.Expr, pl.Expr]:
    """A run's predicted age as an interval: an age in years is both its ends; a bin its own (null: no age)."""
    age = pl.col(f"pred_age{suffix}").cast(pl.Float64)
    low = pl.coalesce(age, pl.col(f"pred_age_low{suffix}").cast(pl.Float64))
    return low, pl.coalesce(age, pl.col(f"pred_age_high{suffix}").cast(pl.Float64))


def gallery_rows(table: pl.DataFrame) -> list[dict]:
    """A gallery table as metrics.json lists it: the path, the truth, each run's predictions (labels by name; an
    age predicted as a bin by its ends, ``a_age_low`` / ``a_age_high``, ``a_age`` null) and the ``difference`` it
    was ranked by."""
    runs = [
        expr
        for run, suffix in (("a", ""), ("b", "_b"))
        for expr in (
            pl.col(f"pred_gender_label{suffix}").cast(pl.String).alias(f"{run}_gender"),
            pl.col(f"pred_race_label{suffix}").cast(pl.String).alias(f"{run}_race"),
            pl.col(f"pred_age{suffix}").cast(pl.Float64).alias(f"{run}_age"),
            pl.col(f"pred_age_low{suffix}").cast(pl.Int64).alias(f"{run}_age_low"),
            pl.col(f"pred_age_high{suffix}").cast(pl.Int64).alias(f"{run}_age_high"),
            pl.col(f"p_female{suffix}").cast(pl.Float64).alias(f"{run}_p_female"),
            pl.col(f"race_confidence{suffix}").cast(pl.Float64).alias(f"{run}_race_confidence"),
        )
    ]
    truth = [pl.col(f"true_{a}_label").cast(pl.String).alias(f"true_{a}") for a in ("gender", "race")]
    true_bin = [pl.col(f"true_age_{end}").cast(pl.Int64) for end in ("low", "high")]
    return table.select("path", "true_age", *true_bin, *truth, *runs, "difference").to_dicts()
