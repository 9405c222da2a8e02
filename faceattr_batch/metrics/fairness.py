"""Fairness summary: per-group metrics with intervals, and the gaps between groups with bootstrap intervals.

Input: a frame of labelled predictions (``schema.py``'s columns ``true_gender``, ``pred_gender``, ``p_female``,
``true_race``, ``pred_race``, ``RACE_PROB_COLUMNS``, ``true_age``, ``pred_age``; a missing column counts as all null)
and the name of any column to slice by (``true_race_label``, ``true_age_band``, a labels file's ``skin_tone``). A row
counts for an attribute only where both its truth and its prediction are known; rows whose slice value is null are
in no group (``n_unsliced``).

Metrics (``METRICS``; female is the positive class of gender, as ``gender_precision``/``gender_recall`` in
``attributes.py``): ``gender_accuracy``, ``gender_recall_female``, ``gender_recall_male``, ``gender_fpr`` (males
called female / true males), ``gender_fnr`` (females called male / true females), ``gender_ece``;
``race_accuracy``, ``race_recall_<race>`` and ``race_precision_<race>`` for white, black, asian, indian, others,
``race_ece``; ``age_mae``, ``age_bias`` (mean of pred - true), ``age_r2`` (1 - SS_res / SS_tot within the group);
``age_bin_accuracy`` over the rows with an age bin, labelled or predicted (FairFace's protocol:
``attributes.age_in_bin``).
ECE is ``attributes.expected_calibration_error`` on the predicted class's probability.

Intervals per group: Wilson for proportions; Student's t for MAE and bias (means of |error| and error: mean +- t(n-1)
sd/sqrt(n), MAE's low end clipped at 0, as ``attributes.with_intervals`` gives the breakdown's MAE: at n = 2 the width
two errors really leave, never a normal approximation); a bootstrap percentile interval (rows resampled within the
group) for R² and ECE. Between groups, for each metric over the groups in which its count (``n``: rows, true
females, predicted Asians...) is at least ``min_group``: the gap (max - min) and the ratio (min / max, only for
non-negative values, bias excluded), with percentile intervals of that same max group's value minus (over) that
same min group's value in each resample, so that an interval can reach across 0 (the max - min of each resample
never goes below 0). A gap is ``significant`` when its interval excludes 0 (``gap_low`` > 0); the pair is picked
on the same data, so with many groups that test leans optimistic. Bootstrap: ``resamples`` (>= 1,000) resamples,
rows drawn with replacement within each group (stratified), one seeded numpy generator, groups in sorted order.
Resampling inflates ECE (noise looks like miscalibration): a calibrated group's ECE can lie under its interval.

``fairness_summary`` returns one JSON-ready dict (no NaN or inf: None with a ``reason`` instead)::

    {"by": str, "min_group": int, "resamples": int, "seed": int, "level": 0.95, "positive_class": "female",
     "n": int, "n_unsliced": int,
     "metrics": {name: {"attribute": "gender"|"race"|"age", "counts": str, "better": "higher"|"lower"|"zero",
                        "interval": "wilson"|"t"|"bootstrap"}},
     "groups": [{"group": value, "n": int,
                 "metrics": {name: {"value": float|None, "n": int, "low": float|None, "high": float|None,
                                    "interval": "wilson"|"t"|"bootstrap", "reason": str|None}}}],
     "too_few": [{"group": value, "n": int}],                     # fewer than min_group rows: never ranked
     "gaps": {name: {"gap": float|None, "gap_low", "gap_high", "significant": bool|None,
                     "ratio": float|None, "ratio_low", "ratio_high", "ratio_reason": str|None,
                     "max_group": value, "max": float, "min_group": value, "min": float,
                     "groups": int, "left_out": [{"group": value, "n": int, "reason": str}],
                     "reason": str|None}},
     "weakest": {name: [{"group": value, "bound": float, "value": float, "n": int}]}}  # see weakest_slices

Compared nowhere (gap and ratio None, with the reason) where the slicing decides them: a race's precision when
each group holds one true race (0 or 1 there), age R² when each group holds a range of true ages no other reaches.

``group_table`` flattens the groups into a polars frame (one row a group). The counting, each row's sums and the
metrics of sums (a group's and each resample's), is ``metrics.row_sums``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import polars as pl

from faceattr_batch.data.labels import RACE_KEYS
from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics.attributes import (
    ECE_BINS,
    both_known,
    calibration_columns,
    t_quantile,
    wilson_interval,
)
from faceattr_batch.metrics.bootstrap import percentile_interval, resampled_sums
from faceattr_batch.metrics.row_sums import (
    calibration_arrays,
    group_eces,
    metric_values,
    ratio,
    resample_columns,
    resampled_values,
    row_columns,
    with_inputs,
)

MIN_RESAMPLES = 1000


@dataclass(frozen=True)
class Metric:
    name: str
    attribute: str  # gender, race or age
    count: str  # the row column whose sum is its count (its denominator)
    counts: str  # that count in words, for reasons: "true females"
    better: str  # "higher", "lower" or "zero" (signed: the nearer 0 the better)
    interval: str  # "wilson", "t" or "bootstrap"


def _metrics() -> tuple[Metric, ...]:
    gender = [
        Metric("gender_accuracy", "gender", "gender_known", "rows with gender known", "higher", "wilson"),
        Metric("gender_recall_female", "gender", "female", "true females", "higher", "wilson"),
        Metric("gender_recall_male", "gender", "male", "true males", "higher", "wilson"),
        Metric("gender_fpr", "gender", "male", "true males", "lower", "wilson"),
        Metric("gender_fnr", "gender", "female", "true females", "lower", "wilson"),
        Metric("gender_ece", "gender", "gender_calibrated", "rows with P(female) known", "lower", "bootstrap"),
    ]
    race = [Metric("race_accuracy", "race", "race_known", "rows with race known", "higher", "wilson")]
    race += [Metric(f"race_recall_{r}", "race", f"true_{r}", f"true {r}", "higher", "wilson") for r in RACE_KEYS]
    race += [
        Metric(f"race_precision_{r}", "race", f"pred_{r}", f"predicted {r}", "higher", "wilson") for r in RACE_KEYS
    ]
    race.append(Metric("race_ece", "race", "race_calibrated", "rows with race probabilities", "lower", "bootstrap"))
    age = [
        Metric("age_mae", "age", "age_known", "ages known", "lower", "t"),
        Metric("age_bias", "age", "age_known", "ages known", "zero", "t"),
        Metric("age_r2", "age", "age_known", "ages known", "higher", "bootstrap"),
        Metric("age_bin_accuracy", "age", "age_binned", "age bins known", "higher", "wilson"),
    ]
    return tuple(gender + race + age)


METRICS: tuple[Metric, ...] = _metrics()
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
_BY_NAME = {m.name: m for m in METRICS}
_SLICE = "__slice__"  # the slice column's private copy: a labels column may be named like a working one (female)


def _bootstrap(calibration: dict, rows: np.ndarray, column, rng, resamples: int, bins: int) -> dict:
    """Each metric in ``resamples`` resamples of the group's rows: {metric: (resamples,) array, NaN undefined}."""
    columns = resample_columns(rows, calibration, bins)
    return resampled_values(resampled_sums(rng, rows.shape[0], resamples, columns), column, bins)


def _number(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _undefined(metric: Metric, n: int) -> str:
    if n == 0:
        return f"no {metric.counts}"
    if metric.name == "age_r2":
        return "R² needs 2 or more ages" if n < 2 else "all true ages are equal (SS_tot = 0)"
    return f"undefined over {n} {metric.counts}"


def _t_bounds(mean: float, mean_square: float, n: int, level: float) -> tuple[float, float]:
    """Student's t interval of a mean from the mean and the mean square of ``n`` (>= 2) values."""
    sd = np.sqrt(max(mean_square - mean**2, 0.0) * n / (n - 1))
    half = float(t_quantile((1 + level) / 2, n - 1)) * sd / np.sqrt(n)
    return mean - half, mean + half


def _group_metrics(point: dict, counts: dict, draws: dict, level: float) -> dict[str, dict]:
    """One group's metrics: value, count, interval (Wilson, t or bootstrap percentile) or the reason there is
    none. ``point["age_mse"]``: the mean squared age error (|error| and error share it)."""
    z = NormalDist().inv_cdf((1 + level) / 2)
    proportions = [m.name for m in METRICS if m.interval == "wilson"]
    table = pl.DataFrame({"p": [_number(point[name]) for name in proportions], "n": [counts[n] for n in proportions]})
    low, high = wilson_interval(pl.col("p"), pl.col("n"), z)
    wilson = table.select(low.alias("low"), high.alias("high")).rows()
    bounds = dict(zip(proportions, wilson, strict=True))
    result = {}
    for metric in METRICS:
        n, value = counts[metric.name], _number(point[metric.name])
        entry = {"value": value, "n": n, "low": None, "high": None, "interval": metric.interval, "reason": None}
        if value is None:
            entry["reason"] = _undefined(metric, n)
        elif metric.interval == "wilson":
            entry["low"], entry["high"] = bounds[metric.name]
        elif n < 2:
            entry["reason"] = f"no interval from {n} of {metric.counts}"
        elif metric.interval == "t":
            low, high = _t_bounds(value, point["age_mse"], n, level)
            entry["low"], entry["high"] = (max(low, 0.0) if metric.name == "age_mae" else low), high
        else:
            entry["low"], entry["high"], entry["reason"] = percentile_interval(draws[metric.name], level)
        result[metric.name] = entry
    return result


def _gap(metric: Metric, groups: list[dict], draws: list[dict], min_group: int, level: float) -> dict:
    """Max - min and min / max of one metric over the groups with at least ``min_group`` in its count, with
    percentile intervals of the same two groups' difference and ratio in each resample."""
    left_out, eligible = [], []
    for index, group in enumerate(groups):
        entry = group["metrics"][metric.name]
        if entry["n"] < min_group:
            left_out.append({"group": group["group"], "n": entry["n"], "reason": f"fewer than {min_group}"})
        elif entry["value"] is None:
            left_out.append({"group": group["group"], "n": entry["n"], "reason": entry["reason"]})
        else:
            eligible.append(index)
    gap = dict.fromkeys(("gap", "gap_low", "gap_high", "significant", "ratio", "ratio_low", "ratio_high"))
    gap |= {"ratio_reason": None, "max_group": None, "max": None, "min_group": None, "min": None}
    gap |= {"groups": len(eligible), "left_out": left_out, "reason": None}
    if len(eligible) < 2:
        gap["reason"] = f"fewer than 2 groups with at least {min_group} {metric.counts}"
        gap["ratio_reason"] = gap["reason"]
        return gap
    values = np.array([groups[i]["metrics"][metric.name]["value"] for i in eligible])
    # the first maximum and the last minimum: two different groups even when all values are equal
    top, bottom = eligible[int(np.argmax(values))], eligible[len(values) - 1 - int(np.argmin(values[::-1]))]
    high, low = groups[top]["metrics"][metric.name]["value"], groups[bottom]["metrics"][metric.name]["value"]
    gap |= {"max_group": groups[top]["group"], "max": high, "min_group": groups[bottom]["group"], "min": low}
    gap["gap"] = high - low
    gap["gap_low"], gap["gap_high"], gap["reason"] = percentile_interval(
        draws[top][metric.name] - draws[bottom][metric.name], level
    )
    gap["significant"] = None if gap["gap_low"] is None else gap["gap_low"] > 0
    if metric.better == "zero" or low < 0:
        gap["ratio_reason"] = "a ratio of signed values means nothing"
    elif high <= 0:
        gap["ratio_reason"] = "the largest value is 0"
    else:
        gap["ratio"] = low / high
        ratios = ratio(draws[bottom][metric.name], draws[top][metric.name])
        gap["ratio_low"], gap["ratio_high"], gap["ratio_reason"] = percentile_interval(ratios, level)
    return gap


def _pessimistic(metric: Metric, entry: dict) -> float:
    if metric.better == "higher":
        return entry["low"]
    if metric.better == "lower":
        return entry["high"]
    return max(entry["low"], entry["high"], key=abs)  # "zero": the bound farther from 0


def weakest_slices(summary: dict, metrics: list[str] | None = None, k: int | None = None) -> dict[str, list[dict]]:
    """Per metric (all of ``METRIC_NAMES`` by default), the groups of ``fairness_summary``'s output with at least
    ``min_group`` in the metric's count, worst first by the interval's pessimistic bound: the lower bound where
    higher is better (accuracies, recalls, precisions, R²), the upper where lower is (MAE, error rates, ECE), the
    bound farther from 0 for bias. Groups without an interval are left out. ``k`` keeps the first k."""
    ranked = {}
    for name in metrics or METRIC_NAMES:
        metric = _BY_NAME[name]
        rows = []
        for group in summary["groups"]:
            entry = group["metrics"][name]
            if entry["n"] >= summary["min_group"] and entry["low"] is not None:
                bound = _pessimistic(metric, entry)
                rows.append({"group": group["group"], "bound": bound, "value": entry["value"], "n": entry["n"]})
        worst_first = {
            "higher": lambda r: r["bound"],
            "lower": lambda r: -r["bound"],
            "zero": lambda r: -abs(r["bound"]),
        }
        ranked[name] = sorted(rows, key=worst_first[metric.better])[:k]
    return ranked


def _json_key(value):
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float) and np.isfinite(value):
        return value
    return str(value)


def _validate(frame: pl.DataFrame, by: str, min_group: int, resamples: int, level: float) -> None:
    if by not in frame.columns:
        raise FaceattrError(f"no column {by!r} to slice by; the columns are: {', '.join(frame.columns)}")
    if resamples < MIN_RESAMPLES:
        raise FaceattrError(f"resamples must be at least {MIN_RESAMPLES}, not {resamples}")
    if min_group < 2:
        raise FaceattrError(f"min_group must be at least 2, not {min_group}")
    if not 0 < level < 1:
        raise FaceattrError(f"level must be between 0 and 1 (0.95 for 95%), not {level}")


def fairness_summary(
    frame: pl.DataFrame,
    by: str,
    *,
    min_group: int = 30,
    resamples: int = MIN_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    bins: int = ECE_BINS,
) -> dict:
    """The fairness summary of ``frame`` sliced by column ``by`` (the shape in the module docstring): per group,
    every metric of ``METRICS`` with its interval; between the groups with at least ``min_group`` in a metric's
    count, its gap and ratio with bootstrap intervals (``resamples`` resamples within each group, ``seed``);
    the weakest slices. Gender's positive class is female: recall_female = TP / (TP + FN), fpr = FP / (FP + TN)
    with FP a male called female. ``level``: the intervals' coverage; ``bins``: ECE's bins."""
    _validate(frame, by, min_group, resamples, level)
    frame = with_inputs(frame.with_columns(pl.col(by).alias(_SLICE)))
    centre = frame.filter(both_known("true_age")).get_column("true_age").cast(pl.Float64).mean() or 0.0
    row_exprs = row_columns(centre)
    column = {expr.meta.output_name(): index for index, expr in enumerate(row_exprs)}
    sliced = frame.filter(pl.col(_SLICE).is_not_null()).select(
        _SLICE, *row_exprs, *(e.meta.output_name() for e in calibration_columns())
    )
    rng = np.random.default_rng(seed)
    groups, draws, true_races = [], [], []
    for part in sliced.sort(_SLICE, maintain_order=True).partition_by(_SLICE, maintain_order=True):
        rows = part.select(list(column)).to_numpy().astype(np.float64)
        point_sums = rows.sum(axis=0)
        true_races.append(sum(point_sums[column[f"true_{name}"]] > 0 for name in RACE_KEYS))
        calibration = calibration_arrays(part)
        point = metric_values(point_sums, column) | group_eces(calibration, bins)
        point["age_mse"] = float(ratio(point_sums[column["error2"]], point_sums[column["age_known"]]))
        counts = {m.name: int(point_sums[column[m.count]]) for m in METRICS}
        draws.append(_bootstrap(calibration, rows, column, rng, resamples, bins))
        metrics = _group_metrics(point, counts, draws[-1], level)
        groups.append({"group": _json_key(part.get_column(_SLICE)[0]), "n": part.height, "metrics": metrics})
    summary = {
        "by": by, "min_group": min_group, "resamples": resamples, "seed": seed, "level": level,
        "positive_class": "female", "n": sliced.height, "n_unsliced": frame.height - sliced.height,
        "metrics": {
            m.name: {"attribute": m.attribute, "counts": m.counts, "better": m.better, "interval": m.interval}
            for m in METRICS
        },
        "groups": groups,
        "too_few": [{"group": g["group"], "n": g["n"]} for g in groups if g["n"] < min_group],
        "gaps": {m.name: _gap(m, groups, draws, min_group, level) for m in METRICS},
    }  # fmt: skip
    by_design = {}  # metrics the slicing itself decides, compared nowhere
    if max(true_races, default=0) <= 1:  # slices of the true race: a class's precision is 0 or 1 there
        reason = "each group holds one true race: its precision is 0 or 1 by design"
        by_design |= dict.fromkeys((f"race_precision_{n}" for n in RACE_KEYS), reason)
    if _slices_true_age(frame):  # age bands: R² within one measures the band's width more than the model
        by_design["age_r2"] = "each group holds its own range of true ages: R² within a range is low by design"
    for name, reason in by_design.items():
        gap = summary["gaps"][name]
        gap |= {key: None for key in gap if key not in ("groups", "left_out")}
        gap["reason"] = gap["ratio_reason"] = reason
    summary["weakest"] = weakest_slices(summary, [name for name in METRIC_NAMES if name not in by_design])
    return summary


def _slices_true_age(frame: pl.DataFrame) -> bool:
    """Whether two or more groups hold ages and each holds a range of true ages no other reaches (age bands, or
    any slicing of the true age)."""
    ranges = (
        frame.filter(both_known("true_age") & pl.col(_SLICE).is_not_null())
        .group_by(_SLICE)
        .agg(low=pl.col("true_age").min(), high=pl.col("true_age").max())
        .sort("low", "high")
    )
    return ranges.height >= 2 and bool((ranges["high"].head(-1) < ranges["low"].tail(-1)).all())


def group_table(summary: dict) -> pl.DataFrame:
    """``fairness_summary``'s groups as one frame: ``group``, ``n``, and per metric ``<name>``, ``<name>_n``,
    ``<name>_low``, ``<name>_high`` (null where undefined), in the summary's group order."""
    rows = []
    for group in summary["groups"]:
        row = {"group": str(group["group"]), "n": group["n"]}
        for name, entry in group["metrics"].items():
            row |= {name: entry["value"], **{f"{name}_{key}": entry[key] for key in ("n", "low", "high")}}
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)
