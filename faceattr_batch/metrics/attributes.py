"""Attribute metrics as polars expressions, so the same definitions give overall figures and per-slice tables.

Input columns (any frame of predictions beside labels, as ``schema.py`` names them): the integer codes
``true_gender``, ``pred_gender``, ``true_race``, ``pred_race`` and the ages ``true_age``, ``pred_age``; ``breakdown``
also reads the true labels' Enum columns to slice by. ``metric_exprs`` are aggregations: use them in ``select`` for
the whole frame or in ``group_by(...).agg`` for slices (``breakdown``).

An age labelled as a bin (FairFace's "20-29": ``true_age_low``/``true_age_high`` known, ``true_age`` null; see
``data.label_files``), or predicted as one (another tool's, FairFace's classifier: ``pred_age_low``/``pred_age_high``,
``pred_age`` null), has no error in years: such rows are measured by FairFace's own protocol instead of MAE,
``age_bin_accuracy``, the share of ages in the right bin (``age_in_bin``), over ``n_age_bin`` rows.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import polars as pl

from faceattr_batch.data.labels import GENDERS, RACES
from faceattr_batch.errors import FaceattrError
from faceattr_batch.schema import RACE_PROB_COLUMNS, with_age_bins

GROSS_AGE_ERROR = 10  # years; an age error above this is counted as gross
CS_TOLERANCE = 5  # cumulative score CS@5: share of ages within 5 years
# the slices of the reports -> the predictions' true-label column each reads (schema's Enum labels)
SLICE_COLUMNS = {"race": "true_race_label", "gender": "true_gender_label", "age_band": "true_age_band"}
SLICE_BY = list(SLICE_COLUMNS)
# metrics across the classes of one attribute, which say nothing inside a slice holding one true class of it
# (race macro-F1 inside the White slice: "0.194" beside 94.5% accuracy): left out of such slices' tables
WITHIN_SLICE_MEANINGLESS = {
    "race": ("race_macro_f1",),
    "gender": ("gender_precision", "gender_recall", "gender_f1"),
}


def both_known(column: str) -> pl.Expr:
    """The rows where ``column`` (a ``true_`` label) and its ``pred_`` prediction are both known."""
    return pl.col(column).is_not_null() & pl.col(column.replace("true_", "pred_")).is_not_null()


def gender_exprs() -> list[pl.Expr]:
    known = both_known("true_gender")
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
    known = both_known("true_race")
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
    known = both_known("true_age")
    error = (pl.col("pred_age") - pl.col("true_age")).filter(known).cast(pl.Float64)
    return [
        known.sum().alias("n_age"),
        error.abs().mean().alias("age_mae"),
        error.pow(2).mean().sqrt().alias("age_rmse"),
        (error.abs() <= CS_TOLERANCE).mean().alias("age_cs5"),
        (error.abs() > GROSS_AGE_ERROR).mean().alias("age_gross_rate"),
        error.mean().alias("age_bias"),
    ]


def _bin_ends(side: str) -> pl.Expr:
    return pl.col(f"{side}_age_low").is_not_null() & pl.col(f"{side}_age_high").is_not_null()


def age_bin_known() -> pl.Expr:
    """A row with a bin on either side and an age on the other: a labelled bin (no age in years) and a predicted
    age (in years or a bin), or a labelled age in years and a predicted bin (another tool's: FairFace's classifier
    predicts bins; or ours put in its bins by ``report --compare``, which keeps the years beside them)."""
    true_bin = pl.col("true_age").is_null() & _bin_ends("true")
    pred_bin = _bin_ends("pred")
    return (true_bin & (pl.col("pred_age").is_not_null() | pred_bin)) | (pl.col("true_age").is_not_null() & pred_bin)


def age_in_bin() -> pl.Expr:
    """Whether the age falls in the right bin (null where ``age_bin_known`` is not): a predicted age in years
    inside the labelled bin, the prediction (the median) rounded to the nearest whole year, halves up (29.5 -> 30:
    the labels are whole years), both ends included ("20-29" holds 19.5 to 29.49; "more than 70", 70..120, holds
    69.5 and above); a predicted bin equal to the labelled one; a labelled age in years inside the predicted bin."""
    years = (pl.col("pred_age").cast(pl.Float64) + 0.5).floor()
    labelled_bin = pl.col("true_age").is_null()  # where age_bin_known: a labelled bin, else a predicted one
    return (
        pl.when(~age_bin_known()).then(None)
        .when(labelled_bin & pl.col("pred_age").is_not_null())
        .then(years.is_between(pl.col("true_age_low"), pl.col("true_age_high")))
        .when(labelled_bin)
        .then((pl.col("pred_age_low") == pl.col("true_age_low")) & (pl.col("pred_age_high") == pl.col("true_age_high")))
        .otherwise(pl.col("true_age").is_between(pl.col("pred_age_low"), pl.col("pred_age_high")))
    )  # fmt: skip


def age_bin_exprs() -> list[pl.Expr]:
    return [age_bin_known().sum().alias("n_age_bin"), age_in_bin().mean().alias("age_bin_accuracy")]


def metric_exprs() -> list[pl.Expr]:
    """Every metric; the frame needs the age bin columns (``with_age_bins``)."""
    return gender_exprs() + race_exprs() + age_exprs() + age_bin_exprs()


def overall(frame: pl.DataFrame, intervals: bool = False) -> dict:
    """Whole-frame metrics; ``intervals`` adds 95% intervals (see ``with_intervals``)."""
    frame = with_age_bins(frame)
    if not intervals:
        return frame.select(metric_exprs()).row(0, named=True)
    return with_intervals(frame.select(*metric_exprs(), *_interval_inputs())).row(0, named=True)


def breakdown(frame: pl.DataFrame, by: list[str], intervals: bool = False) -> pl.DataFrame:
    """Metrics per slice (``by``: names of ``SLICE_BY``, race, gender, age_band, read from the predictions' Enum
    label columns, so slices come in vocabulary order; any other name is a column of ``frame`` itself, such as a
    labels file's ``source``), with counts; rows with a null slice value are in no slice. ``intervals`` adds 95%
    intervals (see ``with_intervals``). The metrics of ``WITHIN_SLICE_MEANINGLESS`` are left out where their
    attribute is one of ``by``."""
    sliced = with_age_bins(frame).with_columns(pl.col(SLICE_COLUMNS.get(key, key)).alias(key) for key in by)
    sliced = sliced.filter(pl.all_horizontal([pl.col(c).is_not_null() for c in by]))
    extra = _interval_inputs() if intervals else []
    try:
        table = sliced.group_by(by).agg(pl.len().alias("n"), *metric_exprs(), *extra).sort(by)
        table = table.drop(name for key in by for name in WITHIN_SLICE_MEANINGLESS.get(key, ()))
        found = with_intervals(table) if intervals else table
        if all(found[key].equals(table[key]) for key in by):  # an interval column named like a slice replaces it
            return found
    except pl.exceptions.DuplicateError:  # a labels column named like one of the table's own (n, age_mae, ...)
        pass
    own = [key for key in by if key not in SLICE_COLUMNS]
    raise FaceattrError(
        f"--slice-by {', '.join(own)}: a name the report's tables use for their own columns; rename it in the labels "
        "file"
    )


def confusion_matrix(frame: pl.DataFrame, attribute: str = "race") -> list[list[int]]:
    """Confusion counts of ``attribute`` (race or gender), rows = true class, columns = predicted class."""
    classes = {"race": RACES, "gender": GENDERS}[attribute]
    truth, pred = f"true_{attribute}", f"pred_{attribute}"
    counts = frame.filter(both_known(truth)).group_by(truth, pred).len().iter_rows()
    matrix = [[0] * len(classes) for _ in classes]
    for truth, pred, n in counts:
        matrix[truth][pred] = n
    return matrix


# --- intervals, calibration, worst errors (predict's reports) ------------------------------------------------

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def _interval_inputs() -> list[pl.Expr]:
    known = both_known("true_age")
    error = (pl.col("pred_age") - pl.col("true_age")).filter(known).cast(pl.Float64)
    return [error.abs().std().alias("_age_abs_error_std")]


def wilson_interval(p: pl.Expr, n: pl.Expr, z: float = Z95) -> tuple[pl.Expr, pl.Expr]:
    """Wilson score interval of a proportion ``p`` observed over ``n`` trials (sound for small n and p near 0/1)."""
    n = n.cast(pl.Float64)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)).sqrt()
    valid = n > 0
    # clipped: at p = 0 or 1 rounding would put a bound a hair outside [0, 1]
    return pl.when(valid).then((centre - half).clip(0.0, 1.0)), pl.when(valid).then((centre + half).clip(0.0, 1.0))


def t_quantile(p: float, df) -> np.ndarray:
    """Student's t quantile at probability ``p`` for ``df`` degrees of freedom (array-like, >= 1): exact for 1
    and 2, else the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5; within 0.15% of the exact value
    at df = 3, 1e-5 at df = 10)."""
    df = np.asarray(df, dtype=np.float64)
    z = NormalDist().inv_cdf(p)
    g = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        t = z + sum(term / df ** (power + 1) for power, term in enumerate(g))
        t = np.where(df == 2, (2 * p - 1) / np.sqrt(2 * p * (1 - p)), t)
        return np.where(df == 1, np.tan(np.pi * (p - 0.5)), t)


def with_intervals(table: pl.DataFrame, z: float = Z95) -> pl.DataFrame:
    """Add ``*_low``/``*_high``: Wilson for the accuracies, CS@5 and the age bin accuracy; for MAE Student's t
    interval, mean +- t(n-1) sd/sqrt(n) (at n = 2 a half-width of 12.7 sd/sqrt(2), not the normal approximation's
    1.96: the width two errors really leave), null under 2 ages (``age_mae_interval``: why, or null where there is
    one)."""
    exprs = []
    counts = {
        "gender_accuracy": "n_gender",
        "race_accuracy": "n_race",
        "age_cs5": "n_age",
        "age_bin_accuracy": "n_age_bin",
    }
    for name, count in counts.items():
        low, high = wilson_interval(pl.col(name), pl.col(count), z)
        exprs += [low.alias(f"{name}_low"), high.alias(f"{name}_high")]
    n_age = table["n_age"].cast(pl.Float64).to_numpy()
    t = pl.Series(t_quantile(NormalDist().cdf(z), np.maximum(n_age - 1, 1)), dtype=pl.Float64)
    enough = pl.col("n_age") >= 2
    half = pl.lit(t) * pl.col("_age_abs_error_std") / pl.col("n_age").cast(pl.Float64).sqrt()
    exprs += [
        pl.when(enough).then((pl.col("age_mae") - half).clip(lower_bound=0.0)).alias("age_mae_low"),
        pl.when(enough).then(pl.col("age_mae") + half).alias("age_mae_high"),
        pl.when(~enough).then(pl.format("not computed (n = {})", pl.col("n_age"))).alias("age_mae_interval"),
    ]
    return table.with_columns(exprs).drop("_age_abs_error_std")


def calibration(frame: pl.DataFrame, bins: int = 10) -> dict[str, pl.DataFrame]:
    """Reliability tables: gender (mean P(female) vs share female) and race (mean top probability vs
    accuracy) per probability bin, with counts; plus the age interval's coverage of the true age."""

    def bin_of(p: pl.Expr) -> pl.Expr:
        return (p * bins).floor().clip(0, bins - 1).cast(pl.Int32).alias("bin")

    gender = (
        frame.filter(both_known("true_gender") & pl.col("p_female").is_not_null())
        .group_by(bin_of(pl.col("p_female")))
        .agg(
            pl.len().alias("n"),
            pl.col("p_female").mean().alias("confidence"),
            (pl.col("true_gender") == 1).mean().alias("observed"),
        )
        .sort("confidence")
    )
    top = pl.max_horizontal(RACE_PROB_COLUMNS)
    race = (
        frame.filter(both_known("true_race") & top.is_not_null())
        .group_by(bin_of(top))
        .agg(
            pl.len().alias("n"),
            top.mean().alias("confidence"),
            (pl.col("true_race") == pl.col("pred_race")).mean().alias("observed"),
        )
        .sort("confidence")
    )
    return {"gender": gender, "race": race}


ECE_BINS = 15  # equal-width confidence bins of every ECE the package reports


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float | None:
    """ECE: the share-weighted mean |mean confidence - accuracy| over ``bins`` equal-width confidence bins
    (Guo et al. 2017). ``confidence``: the predicted class's probability (for gender max(p, 1 - p));
    ``correct``: whether that class was right. The one ECE of the package: train's report and predict's use it, and
    a bootstrap sums ``ece_columns`` for ``ece_of_sums``. A NaN confidence is a row that counts for nothing. None
    when there are no rows.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    known = ~np.isnan(confidence)
    if not known.any():
        return None
    gap = _calibration_gap(confidence, correct, known)
    per_bin = np.bincount(_confidence_bin(confidence, known, bins), weights=gap, minlength=bins)
    return float(ece_of_sums(np.append(per_bin, known.sum())))


def ece_columns(confidence, correct, bins: int = ECE_BINS) -> np.ndarray:
    """(n, bins + 1): each row's confidence - correct in its bin's column and 1 in the last (a NaN confidence: a row
    of 0s, counting for nothing). A resample's column sums of it give that resample's ECE (``ece_of_sums``), so a
    bootstrap sums them with its other row columns in one matrix product."""
    confidence = np.asarray(confidence, dtype=np.float64)
    known = ~np.isnan(confidence)
    columns = np.zeros((confidence.size, bins + 1))
    columns[np.arange(confidence.size), _confidence_bin(confidence, known, bins)] = _calibration_gap(
        confidence, correct, known
    )
    columns[:, bins] = known
    return columns


def ece_of_sums(sums: np.ndarray) -> np.ndarray:
    """ECE from ``ece_columns``' sums (last axis, bins + 1 long): NaN where no row counts."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(sums[..., :-1]).sum(axis=-1) / sums[..., -1]


def _confidence_bin(confidence: np.ndarray, known: np.ndarray, bins: int) -> np.ndarray:
    # bins (low, high]; a confidence of exactly 0 joins the first
    return np.clip(np.ceil(np.where(known, confidence, 0) * bins).astype(np.int64) - 1, 0, bins - 1)


def _calibration_gap(confidence: np.ndarray, correct, known: np.ndarray) -> np.ndarray:
    return np.where(known, confidence - np.asarray(correct, dtype=np.float64), 0.0)


def calibration_columns() -> list[pl.Expr]:
    """Per row, what ECE reads, null where the truth or the probabilities are unknown: ``gender_confidence``
    (max(P(female), P(male))) and ``gender_confident_correct`` (the likelier gender is the true one),
    ``race_confidence`` (the top race probability) and ``race_confident_correct`` (``pred_race`` is the true race)."""
    p_female = pl.col("p_female")
    gender_known = both_known("true_gender") & p_female.is_not_null()
    top = pl.max_horizontal(RACE_PROB_COLUMNS)
    race_known = both_known("true_race") & top.is_not_null()
    return [
        pl.when(gender_known).then(pl.max_horizontal(p_female, 1 - p_female)).alias("gender_confidence"),
        pl.when(gender_known).then((p_female >= 0.5) == (pl.col("true_gender") == 1)).alias("gender_confident_correct"),
        pl.when(race_known).then(top).alias("race_confidence"),
        pl.when(race_known).then(pl.col("pred_race") == pl.col("true_race")).alias("race_confident_correct"),
    ]


def calibration_errors(frame: pl.DataFrame) -> dict[str, float | None]:
    """``gender_ece`` and ``race_ece`` of a predictions frame, by ``expected_calibration_error``."""
    columns = frame.select(calibration_columns())
    errors = {}
    for attribute in ("gender", "race"):
        known = columns.select(f"{attribute}_confidence", f"{attribute}_confident_correct").drop_nulls()
        confidence, correct = (known.get_column(name).to_numpy() for name in known.columns)
        errors[f"{attribute}_ece"] = expected_calibration_error(confidence, correct)
    return errors


def age_interval_coverage(frame: pl.DataFrame) -> float | None:
    """Share of true ages inside [age_low, age_high] (the model's 80% interval: ~0.8 when calibrated)."""
    known = frame.filter(both_known("true_age") & pl.col("age_low").is_not_null())
    if known.is_empty():
        return None
    return known.select(pl.col("true_age").is_between(pl.col("age_low"), pl.col("age_high")).mean()).item()


def worst_errors(frame: pl.DataFrame, k: int = 12) -> dict[str, pl.DataFrame]:
    """The ``k`` largest age errors and the ``k`` most confident wrong genders and races, with their paths."""
    age = (
        frame.filter(both_known("true_age"))
        .with_columns((pl.col("pred_age") - pl.col("true_age")).abs().alias("abs_age_error"))
        .sort("abs_age_error", "path", descending=[True, False])
        .head(k)
    )
    confidence = pl.when(pl.col("pred_gender") == 1).then(pl.col("p_female")).otherwise(1 - pl.col("p_female"))
    gender = (
        frame.filter(both_known("true_gender") & (pl.col("true_gender") != pl.col("pred_gender")))
        .with_columns(confidence.alias("confidence"))
        .sort("confidence", "path", descending=[True, False], nulls_last=True)
        .head(k)
    )
    race = (
        frame.filter(both_known("true_race") & (pl.col("true_race") != pl.col("pred_race")))
        .with_columns(pl.max_horizontal(RACE_PROB_COLUMNS).alias("confidence"))
        .sort("confidence", "path", descending=[True, False], nulls_last=True)
        .head(k)
    )
    return {"age": age, "gender": gender, "race": race}
