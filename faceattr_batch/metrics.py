"""Attribute metrics as polars expressions, so the same definitions give overall figures and per-slice tables.

Input columns (any frame of predictions beside labels): ``true_gender``, ``pred_gender``, ``true_race``,
``pred_race``, ``true_age`` and ``pred_age``. ``metric_exprs`` are aggregations: use them in ``select`` for
the whole frame or in ``group_by(...).agg`` for slices (``breakdown``).
"""

from __future__ import annotations

import polars as pl

from faceattr_batch.labels import GENDERS, RACES, age_band_expr

GROSS_AGE_ERROR = 10  # years; an age error above this is counted as gross
CS_TOLERANCE = 5  # cumulative score CS@5: share of ages within 5 years


def _has(column: str) -> pl.Expr:
    return pl.col(column).is_not_null() & pl.col(column.replace("true_", "pred_")).is_not_null()


def gender_exprs() -> list[pl.Expr]:
    known = _has("true_gender")
    truth, pred = pl.col("true_gender").filter(known), pl.col("pred_gender").filter(known)
    tp = ((truth == 1) & (pred == 1)).sum()
    fp = ((truth == 0) & (pred == 1)).sum()
    fn = ((truth == 1) & (pred == 0)).sum()
    return [
        known.sum().alias("n_gender"),
        (truth == pred).mean().alias("gender_accuracy"),
        (tp / (tp + fp)).alias("gender_precision"),  # of faces called female, the share that are
        (tp / (tp + fn)).alias("gender_recall"),
        (2 * tp / (2 * tp + fp + fn)).alias("gender_f1"),
    ]


def race_exprs() -> list[pl.Expr]:
    known = _has("true_race")
    truth, pred = pl.col("true_race").filter(known), pl.col("pred_race").filter(known)
    f1s = []
    for code in range(len(RACES)):
        tp = ((truth == code) & (pred == code)).sum()
        wrong = ((truth == code) != (pred == code)).sum()
        # classes absent from both truth and prediction are left out of the macro average (None)
        f1s.append(pl.when(tp + wrong > 0).then(2 * tp / (2 * tp + wrong)))
    return [
        known.sum().alias("n_race"),
        (truth == pred).mean().alias("race_accuracy"),
        pl.mean_horizontal(f1s).alias("race_macro_f1"),
    ]


def age_exprs() -> list[pl.Expr]:
    known = _has("true_age")
    error = (pl.col("pred_age") - pl.col("true_age")).filter(known).cast(pl.Float64)
    return [
        known.sum().alias("n_age"),
        error.abs().mean().alias("age_mae"),
        error.pow(2).mean().sqrt().alias("age_rmse"),
        (error.abs() <= CS_TOLERANCE).mean().alias("age_cs5"),
        (error.abs() > GROSS_AGE_ERROR).mean().alias("age_gross_rate"),
        error.mean().alias("age_bias"),
    ]


def metric_exprs() -> list[pl.Expr]:
    return gender_exprs() + race_exprs() + age_exprs()


def overall(frame: pl.DataFrame) -> dict:
    return frame.select(metric_exprs()).row(0, named=True)


def with_slice_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Readable true-label columns for slicing: race, gender, age band."""
    return frame.with_columns(
        pl.col("true_race").replace_strict(dict(enumerate(RACES)), default=None).alias("race"),
        pl.col("true_gender").replace_strict(dict(enumerate(GENDERS)), default=None).alias("gender"),
        age_band_expr(pl.col("true_age")).alias("age_band"),
    )


def breakdown(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Metrics per slice of the true labels (``by`` from race, gender, age_band), with counts."""
    sliced = with_slice_columns(frame).filter(pl.all_horizontal([pl.col(c).is_not_null() for c in by]))
    return sliced.group_by(by).agg(pl.len().alias("n"), *metric_exprs()).sort(by)


def confusion_matrix(frame: pl.DataFrame) -> list[list[int]]:
    """Race confusion counts, rows = true race, columns = predicted race."""
    counts = frame.filter(_has("true_race")).group_by("true_race", "pred_race").len().iter_rows()
    matrix = [[0] * len(RACES) for _ in RACES]
    for truth, pred, n in counts:
        matrix[truth][pred] = n
    return matrix
