"""Each labelled row as the quantities whose sums give every metric (``row_columns``), and the metrics of such
sums (``metric_values``, ECE from ``calibration_arrays``): the point value of a group is its rows' sums, and a
bootstrap resample's the draw counts times its rows (``bootstrap.resampled_sums`` over ``resample_columns``, read
back by ``resampled_values``). ``metrics.fairness`` (groups of one run) and ``reporting.compare`` (two runs side
by side) both count this way."""

from __future__ import annotations

import numpy as np
import polars as pl

from faceattr_batch.data.labels import RACE_KEYS
from faceattr_batch.metrics.attributes import (
    age_bin_known,
    age_in_bin,
    both_known,
    calibration_columns,
    ece_columns,
    ece_of_sums,
    expected_calibration_error,
)
from faceattr_batch.schema import PREDICTION_FIELDS, RACE_PROB_COLUMNS, with_age_bins

CALIBRATED = ("gender", "race")  # the attributes with an ECE, in the order of their bootstrap columns
_INPUTS = ("true_gender", "pred_gender", "p_female", "true_race", "pred_race", *RACE_PROB_COLUMNS,
           "true_age", "pred_age")  # fmt: skip


def with_inputs(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every column ``row_columns`` and ``group_eces`` read: a missing input all null, and the
    ``calibration_columns``."""
    frame = with_age_bins(frame).with_columns(
        pl.lit(None, dtype=PREDICTION_FIELDS[name]).alias(name) for name in _INPUTS if name not in frame.columns
    )
    return frame.with_columns(calibration_columns())


def row_columns(age_centre: float) -> list[pl.Expr]:
    """Per row, the quantities whose sums give every metric (0 where unknown): sums of a resample are the draw
    counts times these, so a block of rows gives all metrics of all resamples in one matrix product
    (``bootstrap.resampled_sums``)."""
    true_g, pred_g, true_r, pred_r = (pl.col(c) for c in ("true_gender", "pred_gender", "true_race", "pred_race"))
    gender, race, age = both_known("true_gender"), both_known("true_race"), both_known("true_age")
    error = pl.col("pred_age").cast(pl.Float64) - pl.col("true_age").cast(pl.Float64)
    centred = pl.col("true_age").cast(pl.Float64) - age_centre  # SS_tot from sums, with less cancellation
    columns = {
        "gender_known": gender,
        "gender_hit": gender & (true_g == pred_g),
        "female": gender & (true_g == 1),
        "female_hit": gender & (true_g == 1) & (pred_g == 1),
        "male": gender & (true_g == 0),
        "male_hit": gender & (true_g == 0) & (pred_g == 0),
        "race_known": race,
        "race_hit": race & (true_r == pred_r),
        "age_known": age,
        "abs_error": pl.when(age).then(error.abs()),
        "error": pl.when(age).then(error),
        "error2": pl.when(age).then(error.pow(2)),
        "age": pl.when(age).then(centred),
        "age2": pl.when(age).then(centred.pow(2)),
        "gender_calibrated": pl.col("gender_confidence").is_not_null(),
        "race_calibrated": pl.col("race_confidence").is_not_null(),
        "age_binned": age_bin_known(),
        "age_bin_hit": age_in_bin(),
    }
    for code, name in enumerate(RACE_KEYS):
        columns[f"true_{name}"] = race & (true_r == code)
        columns[f"pred_{name}"] = race & (pred_r == code)
        columns[f"hit_{name}"] = race & (true_r == code) & (pred_r == code)
    return [expr.cast(pl.Float64).fill_null(0.0).alias(name) for name, expr in columns.items()]


def ratio(num, den):
    """num / den elementwise, NaN where den is 0 (a metric of no rows is undefined, not an error)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast_shapes(num.shape, den.shape), np.nan), where=den > 0)


def metric_values(sums: np.ndarray, column: dict[str, int]) -> dict[str, np.ndarray]:
    """Every metric but ECE from the row-column sums (last axis): shape (K,) for a point, (B, K) for B resamples;
    NaN where undefined."""

    def s(name: str) -> np.ndarray:
        return sums[..., column[name]]

    n_age = s("age_known")
    ss_tot = s("age2") - ratio(s("age") ** 2, n_age)
    defined = (n_age >= 2) & (ss_tot > 1e-9 * np.maximum(s("age2"), 1.0))  # equal ages: SS_tot is rounding noise
    values = {
        "gender_accuracy": ratio(s("gender_hit"), s("gender_known")),
        "gender_recall_female": ratio(s("female_hit"), s("female")),
        "gender_recall_male": ratio(s("male_hit"), s("male")),
        "gender_fpr": ratio(s("male") - s("male_hit"), s("male")),
        "gender_fnr": ratio(s("female") - s("female_hit"), s("female")),
        "race_accuracy": ratio(s("race_hit"), s("race_known")),
        "age_mae": ratio(s("abs_error"), n_age),
        "age_bias": ratio(s("error"), n_age),
        "age_r2": np.where(defined, 1 - ratio(s("error2"), np.where(defined, ss_tot, 0.0)), np.nan),
        "age_bin_accuracy": ratio(s("age_bin_hit"), s("age_binned")),
    }
    for name in RACE_KEYS:
        values[f"race_recall_{name}"] = ratio(s(f"hit_{name}"), s(f"true_{name}"))
        values[f"race_precision_{name}"] = ratio(s(f"hit_{name}"), s(f"pred_{name}"))
    return values


def calibration_arrays(group: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per calibrated attribute (``CALIBRATED``), what ECE reads of ``group``: the confidence (NaN where unknown) and
    whether that class was right; read once per group for its point ECEs and its bootstrap."""
    arrays = {}
    for attribute in CALIBRATED:
        confidence = group.get_column(f"{attribute}_confidence").cast(pl.Float64).fill_null(np.nan).to_numpy()
        correct = group.get_column(f"{attribute}_confident_correct").fill_null(False).to_numpy().astype(np.float64)
        arrays[attribute] = confidence, correct
    return arrays


def group_eces(calibration: dict, bins: int) -> dict[str, float]:
    """gender_ece and race_ece of ``calibration_arrays``, by ``expected_calibration_error`` (NaN: no row known)."""
    eces = {}
    for attribute, (confidence, correct) in calibration.items():
        ece = expected_calibration_error(confidence, correct, bins)
        eces[f"{attribute}_ece"] = np.nan if ece is None else ece
    return eces


def resample_columns(rows: np.ndarray, calibration: dict, bins: int):
    """``bootstrap.resampled_sums``' ``columns``: ``rows``' columns, then each ``ece_columns``, a block at a time."""

    def columns(start: int, stop: int) -> np.ndarray:
        eces = [ece_columns(c[start:stop], k[start:stop], bins) for c, k in calibration.values()]
        return np.hstack([rows[start:stop], *eces])

    return columns


def resampled_values(sums: np.ndarray, column: dict[str, int], bins: int, values=None) -> dict[str, np.ndarray]:
    """Every metric of each resample from the sums of ``resample_columns``: ``values`` (``metric_values`` unless
    given) of the row columns, and each ECE from its bins' sums."""
    width = len(column)
    metrics = (values or metric_values)(sums[:, :width], column)
    for i, attribute in enumerate(CALIBRATED):  # resample_columns' order
        start = width + i * (bins + 1)
        metrics[f"{attribute}_ece"] = ece_of_sums(sums[:, start : start + bins + 1])
    return metrics
