"""Suspect labels: the labelled rows whose given label the model's predictions make unlikely, with a score and a
suggested label, so that a person checks the likeliest mistakes first (issue 20).

Input: a frame of labelled predictions (``schema.py``'s ``true_gender``, ``p_female``, ``true_race``,
``RACE_PROB_COLUMNS``, ``true_age``, ``pred_age``, ``age_low``, ``age_high``; a missing column counts as all null).
A row is examined for an attribute only where its label and every prediction the method reads are known; the
others get null in that attribute's columns (never a guess).

Gender and race: confident learning (Northcutt, Jiang and Chuang, "Confident learning: estimating uncertainty in
dataset labels", JAIR 2021), written from the paper, with cleanlab's default filter (prune by noise rate). Class j's
threshold t_j is the mean predicted probability of j over the rows labelled j (its mean self-confidence), estimated
only for classes with at least ``min_per_class`` examinable rows. The confident joint C[i, j] counts the rows
labelled i whose likeliest class among those passing their own threshold (p_j >= t_j) is j; calibrated (each row
rescaled to its class's count, the whole to the number of rows) its off-diagonal estimates how many labels i are
truly j (``estimated_errors``, their sum). For each pair, that many rows labelled i with the largest margin
p_j - p_i are candidates; a candidate is suspect where the model's top class is not its label and the label's
probability is under ``given_ratio`` (0.1) of its class's threshold: a label the model gives less than a tenth of
what it typically gives that class. That last rule keeps the faces the model merely finds ambiguous (White or
Others) off the list: on the 1,890 validation faces with 5% injected race errors it raised precision from 0.38
to 0.57 at recall 0.80-0.89 (``benchmarks/bench_suspects.py``). Suggested label: the model's top class; score:
1 - p_given (cleanlab's self-confidence ranking; it ranked injected errors into the top 50 more often than the
margin did). Gender's two probabilities are 1 - p_female and p_female. Fewer than two classes with a threshold:
the attribute is not examined, and the summary says why. Rows labelled with a class that has no threshold are not
examined either (their own threshold is unknown).

Age: predictions keep only ``pred_age`` (the median age) and the 10th / 90th percentiles of the model's age
distribution, so each row's distribution is approximated by a two-piece normal: its mode at ``pred_age``, a left
sigma of (pred_age - age_low) / z90 and a right sigma of (age_high - pred_age) / z90 (z90 = 1.2816, the standard
normal's 90th percentile), each at least ``MIN_SIGMA`` years (a degenerate or skewed interval). It matches both
quantiles exactly when ``pred_age`` is the median, and keeps the interval's skew (old faces' intervals reach further
up). The label's standardised error e = (true_age - pred_age) / sigma (left sigma below the prediction, right above)
is its normal tail position under that distribution. The model's own error by age (it reads old faces younger) would
make every old face's e large, so e is re-centred and re-scaled within each band of the predicted age
(``data.labels.AGE_BANDS``; not of the label, or a wrong label would choose its own yardstick) by the band's median
and 1.4826 x MAD (a normal's sd, robust to the wrong labels themselves): z = (e - median) / scale. A band with fewer
than ``min_per_class`` examined rows uses the global median and MAD (listed in the summary's ``fallback_bands``); a
scale is at least ``MIN_SCALE``. A row is suspect when |z| > ``age_threshold`` (default 3: under a normal, a
two-sided tail of 0.0027, while a label 30 years off on a face read +-5 years sits near z = 8) and the label is more
than ``attributes.CS_TOLERANCE`` (5) years from ``pred_age`` (within it z is set to 0); score |z|, ``age_tail_p``
the two-sided normal tail 2 (1 - Phi(|z|)), suggested label round(pred_age). Fewer than ``min_per_class`` rows in
all: age is not examined.

``suspect_labels`` returns (frame, summary). The frame has the input's rows in its order (``path`` first when the
input has it) and, per attribute a of gender, race, age: ``a_suspect`` (Boolean), ``a_score`` (Float64),
``a_suggested`` (the code: Int8 for gender and race, Int16 for age), plus ``age_tail_p``. The summary (JSON-ready)::

    {"min_per_class": int, "age_threshold": float, "given_ratio": float,
     "gender" | "race": {"labelled": int, "examined": int, "flagged": int, "estimated_errors": int,
                         "reason": str|None,
                         "class_counts": {name: int}, "thresholds": {name: float|None},
                         "not_examined": {"no prediction": int, "unknown code": int,
                                          "class without threshold": int}},
     "age": {"labelled": int, "examined": int, "flagged": int, "reason": str|None, "threshold": float,
             "global": {"n": int, "median": float, "scale": float}|None,
             "bands": {band: {"n": int, "median": float, "scale": float, "from": "band"|"global"}},
             "fallback_bands": [band], "not_examined": {"no prediction": int}}}
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import polars as pl

from faceattr_batch.data.labels import AGE_BANDS, GENDERS, RACES, code_label
from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics.attributes import CS_TOLERANCE
from faceattr_batch.schema import LABEL_FIELDS, RACE_PROB_COLUMNS

DEFAULT_MIN_PER_CLASS = 20
DEFAULT_AGE_THRESHOLD = 3.0
DEFAULT_GIVEN_RATIO = 0.1
MIN_SIGMA = 0.5  # years: the narrowest side of a row's approximated age distribution
MIN_SCALE = 0.1  # standardised units: the smallest band scale (a band whose errors are all equal)
MAD_TO_SD = 1.4826  # a normal's sd over its median absolute deviation
Z90 = NormalDist().inv_cdf(0.9)
_AGE_INPUTS = ("pred_age", "age_low", "age_high")


def suspect_labels(
    frame: pl.DataFrame,
    *,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    age_threshold: float = DEFAULT_AGE_THRESHOLD,
    given_ratio: float = DEFAULT_GIVEN_RATIO,
) -> tuple[pl.DataFrame, dict]:
    """Per labelled row and attribute: suspect flag, score (higher = likelier wrong), suggested label; and a
    summary of what was examined, flagged and why not (module docstring)."""
    if min_per_class < 2:
        raise FaceattrError(f"min_per_class must be at least 2 (a threshold is a mean over rows), not {min_per_class}")
    if not age_threshold > 0:
        raise FaceattrError(f"age_threshold must be a positive robust z (e.g. 3), not {age_threshold}")
    if not 0 < given_ratio <= 1:
        raise FaceattrError(f"given_ratio must be in (0, 1] (a share of the class threshold), not {given_ratio}")
    gender_probs = np.column_stack([1 - _floats(frame, "p_female"), _floats(frame, "p_female")])
    race_probs = np.column_stack([_floats(frame, name) for name in RACE_PROB_COLUMNS])
    gender_cols, gender = _class_suspects(
        "gender", _floats(frame, "true_gender"), gender_probs, GENDERS, min_per_class, given_ratio
    )
    race_cols, race = _class_suspects(
        "race", _floats(frame, "true_race"), race_probs, RACES, min_per_class, given_ratio
    )
    age_cols, age = _age_suspects(frame, min_per_class, age_threshold)
    columns = [frame["path"]] if "path" in frame.columns else []
    result = pl.DataFrame(columns + gender_cols + race_cols + age_cols)
    summary = {"min_per_class": min_per_class, "age_threshold": float(age_threshold), "given_ratio": given_ratio}
    return result, summary | {"gender": gender, "race": race, "age": age}


def _floats(frame: pl.DataFrame, name: str) -> np.ndarray:
    """A column as float64 with NaN for null; all NaN when the frame lacks it."""
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def _masked(name: str, values: np.ndarray, mask: np.ndarray, dtype: pl.DataType) -> pl.Series:
    """``values`` where ``mask``, null elsewhere, as ``dtype``."""
    values = np.where(mask, values, 0)
    return pl.select(pl.when(pl.Series(mask)).then(pl.Series(values)).cast(dtype).alias(name)).to_series()


def class_thresholds(labels: np.ndarray, probs: np.ndarray, min_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning's per-class thresholds over the rows whose label and probabilities are known: the mean
    p_j over rows labelled j, NaN for a class with fewer than ``min_per_class`` rows; and the class counts."""
    known = _known_rows(labels, probs)
    codes = labels[known].astype(np.int64)
    counts = np.bincount(codes, minlength=probs.shape[1])
    thresholds = np.full(probs.shape[1], np.nan)
    for j in np.flatnonzero(counts >= min_per_class):
        thresholds[j] = probs[known][codes == j, j].mean()
    return thresholds, counts


def _known_rows(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(labels) & (labels >= 0) & (labels < probs.shape[1])
    return valid & ~np.isnan(probs).any(axis=1)


def confident_joint(given: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """C[i, j]: the ``rows`` labelled i whose likeliest class among those passing their own threshold is j (rows
    where no class passes are not counted; a class without a threshold never passes)."""
    passing = probs >= np.where(np.isnan(thresholds), np.inf, thresholds)
    counted = rows & passing.any(axis=1)
    likeliest = np.where(passing, probs, -np.inf).argmax(axis=1)
    joint = np.zeros((probs.shape[1], probs.shape[1]), dtype=np.int64)
    np.add.at(joint, (given[counted], likeliest[counted]), 1)
    return joint


def estimated_errors(joint: np.ndarray, class_counts: np.ndarray) -> np.ndarray:
    """The calibrated confident joint's off-diagonal as counts: about how many rows labelled i are truly j. Each row
    of ``joint`` is rescaled to its class's count, the whole to the number of rows, then rounded."""
    row_sums = joint.sum(axis=1, keepdims=True)
    calibrated = np.divide(joint * class_counts[:, None], row_sums, out=np.zeros(joint.shape), where=row_sums > 0)
    if calibrated.sum() > 0:
        calibrated *= class_counts.sum() / calibrated.sum()
    estimate = np.round(calibrated).astype(np.int64)
    np.fill_diagonal(estimate, 0)
    return estimate


def prune_by_noise_rate(given: np.ndarray, probs: np.ndarray, rows: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """For each pair (i, j), the ``estimate[i, j]`` ``rows`` labelled i with the largest margin p_j - p_i."""
    flagged = np.zeros(len(given), dtype=bool)
    for i, j in zip(*np.nonzero(estimate), strict=True):
        labelled = np.flatnonzero(rows & (given == i))
        margin = probs[labelled, j] - probs[labelled, i]
        flagged[labelled[np.argsort(-margin, kind="stable")[: estimate[i, j]]]] = True
    return flagged


def _class_suspects(
    attribute: str,
    labels: np.ndarray,
    probs: np.ndarray,
    names: tuple[str, ...],
    min_per_class: int,
    given_ratio: float,
) -> tuple[list[pl.Series], dict]:
    n_rows, n_classes = probs.shape
    known = _known_rows(labels, probs)
    thresholds, counts = class_thresholds(labels, probs, min_per_class)
    has_threshold = ~np.isnan(thresholds)
    labelled = ~np.isnan(labels)
    valid = labelled & (labels >= 0) & (labels < n_classes)
    rows = np.arange(n_rows)
    given = np.where(known, labels, 0).astype(np.int64)
    examined = known & has_threshold[given]
    summary = {
        "labelled": int(labelled.sum()),
        "examined": int(examined.sum()),
        "flagged": 0,
        "estimated_errors": 0,
        "reason": _class_reason(attribute, labelled, known, counts, names, min_per_class),
        "class_counts": {name: int(c) for name, c in zip(names, counts, strict=True)},
        "thresholds": {name: None if np.isnan(t) else float(t) for name, t in zip(names, thresholds, strict=True)},
        "not_examined": {
            "no prediction": int((valid & ~known).sum()),
            "unknown code": int((labelled & ~valid).sum()),
            "class without threshold": int((known & ~examined).sum()),
        },
    }
    if summary["reason"] is not None:
        examined = np.zeros(n_rows, dtype=bool)
        summary["examined"] = 0
        summary["not_examined"]["class without threshold"] = int(known.sum())
    filled = np.nan_to_num(probs, nan=0.0)  # rows with a NaN are not examined: their values are masked
    p_given = filled[rows, given]
    others = filled.copy()
    others[rows, given] = -np.inf
    likeliest_other = others.argmax(axis=1)
    estimate = estimated_errors(
        confident_joint(given, filled, thresholds, examined), np.bincount(given[examined], minlength=n_classes)
    )
    own = np.where(has_threshold, thresholds, 0.0)[given]
    suspect = (
        prune_by_noise_rate(given, filled, examined, estimate)
        & (filled[rows, likeliest_other] > p_given)  # the model's top class is not the given one
        & (p_given < given_ratio * own)
    )
    summary["flagged"] = int(suspect.sum())
    summary["estimated_errors"] = int(estimate.sum())
    columns = [
        _masked(f"{attribute}_suspect", suspect, examined, pl.Boolean),
        _masked(f"{attribute}_score", 1 - p_given, examined, pl.Float64),
        _masked(f"{attribute}_suggested", np.where(suspect, likeliest_other, given), examined, pl.Int8),
    ]
    return columns, summary


def _class_reason(
    attribute: str,
    labelled: np.ndarray,
    known: np.ndarray,
    counts: np.ndarray,
    names: tuple[str, ...],
    min_per_class: int,
) -> str | None:
    """Why ``attribute`` cannot be examined, or None when at least two classes have a threshold."""
    if not labelled.any():
        return f"no row has a {attribute} label"
    if not known.any():
        return f"no {attribute}-labelled row has the model's {attribute} probabilities"
    enough = int((counts >= min_per_class).sum())
    if enough >= 2:
        return None
    shown = ", ".join(f"{name} {int(c)}" for name, c in zip(names, counts, strict=True))
    return (
        f"{enough} of {len(names)} {attribute} classes have at least {min_per_class} labelled rows with predictions "
        f"({shown}); confident-learning thresholds need 2: nothing examined"
    )


def age_positions(frame: pl.DataFrame) -> np.ndarray:
    """Each row's standardised age error e = (true_age - pred_age) / sigma under the two-piece normal (left sigma
    below the prediction, right sigma above; module docstring); NaN where an input is missing."""
    truth = _floats(frame, "true_age")
    pred, low, high = (_floats(frame, name) for name in _AGE_INPUTS)
    with np.errstate(invalid="ignore"):
        left = np.maximum((pred - low) / Z90, MIN_SIGMA)
        right = np.maximum((high - pred) / Z90, MIN_SIGMA)
        error = truth - pred
        return error / np.where(error < 0, left, right)


def _robust(values: np.ndarray) -> tuple[float, float]:
    median = float(np.median(values))
    return median, max(MAD_TO_SD * float(np.median(np.abs(values - median))), MIN_SCALE)


def _age_suspects(frame: pl.DataFrame, min_per_class: int, age_threshold: float) -> tuple[list[pl.Series], dict]:
    truth = _floats(frame, "true_age")
    position = age_positions(frame)
    labelled = ~np.isnan(truth)
    examined = ~np.isnan(position)
    summary: dict = {
        "labelled": int(labelled.sum()),
        "examined": int(examined.sum()),
        "flagged": 0,
        "reason": None,
        "threshold": float(age_threshold),
        "global": None,
        "bands": {},
        "fallback_bands": [],
        "not_examined": {"no prediction": int((labelled & ~examined).sum())},
    }
    centre = np.zeros(frame.height)
    scale = np.ones(frame.height)
    if not labelled.any():
        summary["reason"] = "no row has an age label"
    elif summary["examined"] < min_per_class:
        summary["reason"] = (
            f"{summary['examined']} age-labelled rows have pred_age, age_low and age_high, fewer than "
            f"{min_per_class}: the model's error cannot be estimated, nothing examined"
        )
    if summary["reason"] is not None:
        examined = np.zeros(frame.height, dtype=bool)
        summary["examined"] = 0
    else:
        global_median, global_scale = _robust(position[examined])
        summary["global"] = {"n": int(examined.sum()), "median": global_median, "scale": global_scale}
        centre[:], scale[:] = global_median, global_scale  # an age outside every band (none in 0..200)
        bands = _band_index(_floats(frame, "pred_age"))
        for index, (name, _, _) in enumerate(AGE_BANDS):
            in_band = examined & (bands == index)
            if not in_band.any():
                continue
            n = int(in_band.sum())
            median, band_scale = _robust(position[in_band]) if n >= min_per_class else (global_median, global_scale)
            source = "band" if n >= min_per_class else "global"
            summary["bands"][name] = {"n": n, "median": median, "scale": band_scale, "from": source}
            if source == "global":
                summary["fallback_bands"].append(name)
            centre[in_band], scale[in_band] = median, band_scale
    z = np.abs(np.nan_to_num(position) - centre) / scale
    pred = np.nan_to_num(_floats(frame, "pred_age"))
    # within CS@5's tolerance of the prediction a label is never suspect: at 0-2 the interval is under a year wide,
    # and a baby labelled 1 and read 2 reached z = 4.7 (the first look at the validation faces' top 15)
    beyond = np.abs(np.nan_to_num(truth) - pred) > CS_TOLERANCE
    z = np.where(beyond, z, 0.0)
    suspect = examined & (z > age_threshold)
    summary["flagged"] = int(suspect.sum())
    tail = np.array([math.erfc(value / math.sqrt(2)) for value in z])
    columns = [
        _masked("age_suspect", suspect, examined, pl.Boolean),
        _masked("age_score", z, examined, pl.Float64),
        _masked("age_suggested", np.round(pred), examined, pl.Int16),
        _masked("age_tail_p", tail, examined, pl.Float64),
    ]
    return columns, summary


def duplicate_conflicts(frame: pl.DataFrame) -> pl.DataFrame:
    """Per row of ``frame`` and attribute a of gender, race, age: where the row's duplicate group (``dup_group``,
    from ``index --hash``) holds more than one distinct label of a, ``a_group_labels`` (the group's labels, sorted,
    as text: "86, 100", "male, female") and ``a_group_suggested``: of the group's labels, the one the model's
    predictions averaged over the group favour (gender and race: the highest mean probability; age: the nearest to
    the mean ``pred_age``), null without them. Both null outside a conflicting group; no ``dup_group``: all null."""
    columns = []
    for attribute in ("gender", "race", "age"):
        truth = f"true_{attribute}"
        names = (f"{attribute}_group_labels", f"{attribute}_group_suggested")
        if "dup_group" not in frame.columns or truth not in frame.columns:
            columns += [pl.lit(None, pl.String).alias(names[0]), pl.lit(None, LABEL_FIELDS[truth]).alias(names[1])]
            continue
        group = pl.col("dup_group")
        label = pl.col(truth)
        conflict = label.drop_nulls().n_unique().over(group) > 1
        support = _label_support(frame, attribute)
        vocabulary = {"gender": GENDERS, "race": RACES}.get(attribute)
        readable = label if vocabulary is None else code_label(label, vocabulary)  # sorts in code order
        labels = readable.drop_nulls().unique().sort().cast(pl.String).str.join(", ").over(group)
        suggested = label.sort_by(support, descending=True, nulls_last=True).first().over(group)
        best_known = support.max().over(group).is_not_null()
        in_conflict = conflict & label.is_not_null()
        columns += [
            pl.when(in_conflict).then(labels).alias(names[0]),
            pl.when(in_conflict & best_known).then(suggested).cast(LABEL_FIELDS[truth]).alias(names[1]),
        ]
    return frame.with_columns(columns).select(column.meta.output_name() for column in columns)


def _label_support(frame: pl.DataFrame, attribute: str) -> pl.Expr:
    """How much the group's mean prediction favours this row's label (higher = more); null without predictions."""
    group = pl.col("dup_group")
    if attribute == "gender":
        if "p_female" not in frame.columns:
            return pl.lit(None, pl.Float64)
        mean_female = pl.col("p_female").mean().over(group)
        return pl.when(pl.col("true_gender") == 1).then(mean_female).otherwise(1 - mean_female)
    if attribute == "race":
        if not set(RACE_PROB_COLUMNS) <= set(frame.columns):
            return pl.lit(None, pl.Float64)
        means = [pl.col(name).mean().over(group) for name in RACE_PROB_COLUMNS]
        return pl.coalesce(pl.when(pl.col("true_race") == code).then(mean) for code, mean in enumerate(means))
    if "pred_age" not in frame.columns:
        return pl.lit(None, pl.Float64)
    return -(pl.col("true_age").cast(pl.Float64) - pl.col("pred_age").mean().over(group)).abs()


def _band_index(ages: np.ndarray) -> np.ndarray:
    """The index in ``AGE_BANDS`` of each (rounded) age; -1 for NaN or an age outside every band."""
    rounded = np.round(np.nan_to_num(ages, nan=-1.0))
    index = np.full(ages.shape, -1)
    for i, (_, low, high) in enumerate(AGE_BANDS):
        index[(rounded >= low) & (rounded <= high)] = i
    return index
