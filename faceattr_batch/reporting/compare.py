"""Two runs compared: two models on the same images, or one model on two datasets (``report --compare``).

Each run is a predictions frame with its true labels (``predict``'s own or another tool's, ``--labels`` applying to
both). Every metric of ``COMPARED``, overall and per group of race, gender, age band and the ``slice_by`` columns,
is computed on each run's metric rows (``summary.labelled_rows``: labelled, the images a model was trained on left
out unless ``include_training``), side by side with the difference B − A. Extra slicing columns are binned over
both runs at once (``name:k``: the same quantile bins for A and B).

Images are matched by path, or by file name where no path is in both (``reporting.pairing``). The pairs are the
images with one predicted face in each run; where there are any, each difference also gets a paired bootstrap
interval: the labelled pairs (of the group, for a slice: both runs place the image in it) resampled jointly,
``resamples`` times, one seeded generator, each resample's metric of B minus that of A (``metrics.row_sums``' sums,
``bootstrap.resampled_sums``: A's and B's row columns side by side, so each resample draws the same pairs for
both). Without a pair, the differences stand alone and ``shared.reason`` says why there is no interval.

Disagreements and their gallery: ``reporting.disagreements``.

``compare_runs`` returns metrics.json's ``compare``::

    {"a": run, "b": run,  # run: predictions, name (with the model file where both names are alike), models,
                          #      model_source (the model file predict recorded), foreign (another tool's summary
                          #      or None), labels (the labels file's counts), images, predicted, metric_rows,
                          #      attributes (those it predicts)
     "shared": {"matched_by": "path" | "file name", "images": int, "only_a": int, "only_b": int, "pairs": int,
                "labelled_pairs": int, "several_faces": int, "paired": bool, "reason": str|None},
     "resamples": int, "seed": int, "level": float,
     "age_bins": {"binned": "A"|"B", "bins": [str]} | None,  # a run's years put in the other's bins (binned_ages)
     "metrics": {name: {"attribute": str, "better": "higher"|"lower"|"zero", "unit": "share"|"years"|"score",
                        "count": str}},  # count: the row column that counts its rows (n_a, n_b, paired n)
     "overall": {name: entry},
     "slices": {attribute: {"column": str, "bins": int|None,
                            "groups": [{"group": str, "n_a": int, "n_b": int, "pairs": int,
                                        "metrics": {name: entry}}]}},
     "disagreements": {"pairs": int, "age_threshold": 10,
                       attribute: {"compared": int, "disagree": int, "share": float|None}},
     "gallery": {attribute: [{path, true_*, a_*, b_*, difference}]}}

    entry: {"a": float|None, "b": float|None, "diff": float|None, "n_a": int, "n_b": int,
            "paired": {"n": int, "a", "b", "diff", "low", "high", "reason": str|None} | None}

A metric a run cannot compute (no labels, or an attribute its tool does not predict) is None, as is its
difference. Ages labelled or predicted as bins (FairFace's) are measured by ``age_bin_accuracy``, counted by
``age_binned``; a pair counts for each age metric where both runs measure the image alike (in years in both, or by
bin in both; ``reporting.binned_ages`` puts a run's years in the other's bins where that is all that differs).
``shown_metrics`` picks the rows the page and the terminal show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.data.labels import RACE_KEYS
from faceattr_batch.io.atomic import finite
from faceattr_batch.metrics import fairness, row_sums, slicing
from faceattr_batch.metrics.attributes import CS_TOLERANCE, ECE_BINS, GROSS_AGE_ERROR, SLICE_BY, SLICE_COLUMNS
from faceattr_batch.metrics.bootstrap import percentile_interval, resampled_sums
from faceattr_batch.reporting.binned_ages import bin_names, binned_like
from faceattr_batch.reporting.disagreements import disagreements_between, gallery_rows
from faceattr_batch.reporting.pairing import matched_paths, pair_index, shared_images
from faceattr_batch.reporting.summary import labelled_rows
from faceattr_batch.schema import MODEL_KEY, OUTPUT_COLUMNS, recorded

_COUNT = {"gender": "gender_known", "race": "race_known", "age": "age_known"}
_BIN_COLUMNS = ("age_binned", "age_bin_hit")  # the age-bin metric's row columns (metrics.row_sums), counted apart
_SIDE = "_run"  # which run a row of the two runs' rows put together came from


@dataclass(frozen=True)
class Metric:
    name: str
    attribute: str  # gender, race or age
    better: str  # higher, lower, zero (signed: the nearer 0 the better)
    unit: str  # share (shown in %), years, score
    count: str = ""  # the row column counting its rows; "": its attribute's (``_COUNT``)

    @property
    def counted_by(self) -> str:
        return self.count or _COUNT[self.attribute]


def _compared() -> tuple[Metric, ...]:
    gender = ("accuracy", "precision", "recall_female", "recall_male", "f1")
    race = ("accuracy", "macro_f1", *(f"{kind}_{r}" for kind in ("recall", "precision") for r in RACE_KEYS))
    age = {"mae": ("lower", "years"), "rmse": ("lower", "years"), "bias": ("zero", "years"),
           "cs5": ("higher", "share"), "gross_rate": ("lower", "share"), "r2": ("higher", "score")}  # fmt: skip
    return (
        *(Metric(f"gender_{name}", "gender", "higher", "share") for name in gender),
        Metric("gender_ece", "gender", "lower", "score"),
        *(Metric(f"race_{name}", "race", "higher", "share") for name in race),
        Metric("race_ece", "race", "lower", "score"),
        *(Metric(f"age_{name}", "age", better, unit) for name, (better, unit) in age.items()),
        Metric("age_bin_accuracy", "age", "higher", "share", count="age_binned"),  # FairFace's ages: bins
    )


COMPARED: tuple[Metric, ...] = _compared()
_COUNTED = tuple(dict.fromkeys(m.counted_by for m in COMPARED))  # the row columns that count the metrics' rows
# why an age metric has no pair: an age measured in years (labelled and predicted), or by a bin (either side)
_MEASURED = {"age_known": "in years", "age_binned": "by bin"}
# metrics across the classes of an attribute, meaningless inside a group holding one true class of it
_WITHIN_GROUP = {
    "gender": {"gender_precision", "gender_f1"},
    "race": {"race_macro_f1", *(f"race_precision_{r}" for r in RACE_KEYS)},
}


@dataclass(frozen=True)
class Run:
    """One run: its predictions file, the frame read from it with the true labels attached (``report.read_run``),
    another tool's table summary (``ForeignPredictions.summary``; None for ``predict``'s own) and the labels file's
    (``MatchedLabels.summary``; None without one)."""

    predictions: Path
    frame: pl.DataFrame
    foreign: dict | None = None
    labels: dict | None = None


@dataclass(frozen=True)
class Comparison:
    contents: dict  # metrics.json's "compare" (JSON-ready)
    gallery: dict[str, pl.DataFrame]  # attribute -> the largest disagreements, with the columns thumbnails read


def _extra_rows() -> list[pl.Expr]:
    """Row columns the compared metrics need besides ``row_sums.row_columns``: CS@5 and gross errors."""
    known = pl.col("true_age").is_not_null() & pl.col("pred_age").is_not_null()
    error = (pl.col("pred_age").cast(pl.Float64) - pl.col("true_age").cast(pl.Float64)).abs()
    return [
        (known & (error <= CS_TOLERANCE)).cast(pl.Float64).fill_null(0.0).alias("within_cs"),
        (known & (error > GROSS_AGE_ERROR)).cast(pl.Float64).fill_null(0.0).alias("gross"),
    ]


def _values(sums: np.ndarray, column: dict[str, int]) -> dict[str, np.ndarray]:
    """Every compared metric but ECE from the row-column sums (last axis; NaN where undefined): the fairness
    metrics, and female precision and F1, race macro-F1 (over the classes present), RMSE, CS@5, gross rate."""

    def s(name: str) -> np.ndarray:
        return sums[..., column[name]]

    values = row_sums.metric_values(sums, column)
    tp, fp, fn = s("female_hit"), s("male") - s("male_hit"), s("female") - s("female_hit")
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0: undefined, NaN
        f1s = np.stack([2 * s(f"hit_{r}") / (s(f"true_{r}") + s(f"pred_{r}")) for r in RACE_KEYS], axis=-1)
        present = np.isfinite(f1s)
        values |= {
            "gender_precision": tp / (tp + fp),
            "gender_f1": 2 * tp / (2 * tp + fp + fn),
            "race_macro_f1": np.where(present, f1s, 0.0).sum(axis=-1) / present.sum(axis=-1),
            "age_rmse": np.sqrt(s("error2") / s("age_known")),
            "age_cs5": s("within_cs") / s("age_known"),
            "age_gross_rate": s("gross") / s("age_known"),
        }
    return values


@dataclass(frozen=True)
class _Rows:
    """One run's metric rows as the bootstrap reads them: ``matrix`` (rows x row columns), ``calibration`` (what
    ``group_eces`` reads), the paths and each slicing attribute's group per row."""

    matrix: np.ndarray
    calibration: pl.DataFrame
    paths: np.ndarray
    groups: dict[str, np.ndarray]

    def point(self, mask: np.ndarray, column: dict[str, int], bins: int) -> tuple[dict, dict]:
        """Every compared metric over the rows of ``mask``, and the rows counted (by ``_COUNTED`` column)."""
        sums = self.matrix[mask].sum(axis=0)
        calibration = row_sums.calibration_arrays(self.calibration.filter(pl.Series(mask)))
        values = _values(sums, column) | row_sums.group_eces(calibration, bins)
        return values, {name: int(sums[column[name]]) for name in _COUNTED}


def _rows(frame: pl.DataFrame, exprs: list[pl.Expr], attributes: dict[str, str]) -> _Rows:
    frame = row_sums.with_inputs(frame)
    calibration = ("gender_confidence", "gender_confident_correct", "race_confidence", "race_confident_correct")
    groups = {key: frame.get_column(col).cast(pl.String).to_numpy() for key, col in attributes.items()}
    return _Rows(frame.select(exprs).to_numpy().astype(np.float64), frame.select(calibration),
                 frame.get_column("path").to_numpy(), groups)  # fmt: skip


def _entry(point_a, point_b, counts_a, counts_b, metric: Metric, paired) -> dict:
    a, b = (None if np.isnan(p[metric.name]) else float(p[metric.name]) for p in (point_a, point_b))
    return {
        "a": a, "b": b, "diff": None if a is None or b is None else b - a,
        "n_a": counts_a[metric.counted_by], "n_b": counts_b[metric.counted_by],
        "paired": None if paired is None else paired[metric.name],
    }  # fmt: skip


def _attribute_of(name: str) -> str:
    """The attribute a row column belongs to (``row_sums.row_columns``, ``_extra_rows``): its ``<attribute>_known``
    indicator says whether the row counts for it."""
    if name.startswith("gender_") or name in ("female", "female_hit", "male", "male_hit"):
        return "gender"
    return "race" if name.startswith(("race_", "true_", "pred_", "hit_")) else "age"


def _attribute_columns(column: dict[str, int]) -> dict[str, list[int]]:
    """Each attribute's row-column indexes (``_attribute_of``), worked out once per comparison."""
    return {attribute: [i for name, i in column.items() if _attribute_of(name) == attribute] for attribute in _COUNT}


def _known_in_both(ra: np.ndarray, rb: np.ndarray, cal_a, cal_b, column: dict[str, int], owned: dict[str, list[int]]):
    """The pairs' rows with each attribute left out (its row columns ``owned``: 0, its confidence null) where the
    two runs do not both know it, measured alike (an age in years in both, or by bin in both: each kind of age its
    own columns), so A and B are measured on the same images per attribute; and the pairs counted by each
    ``_COUNTED`` column."""
    ra, rb = ra.copy(), rb.copy()
    cal_a, cal_b = cal_a.clone(), cal_b.clone()
    binned = [column[name] for name in _BIN_COLUMNS]
    for attribute, counted in _COUNT.items():
        kinds = {counted: [i for i in owned[attribute] if i not in binned]}
        if attribute == "age":
            kinds["age_binned"] = binned
        for kind, columns in kinds.items():
            both = (ra[:, column[kind]] > 0) & (rb[:, column[kind]] > 0)
            ra[np.ix_(~both, columns)], rb[np.ix_(~both, columns)] = 0.0, 0.0
        if attribute != "age":
            confidence = f"{attribute}_confidence"
            calibrated = pl.Series(cal_a[confidence].is_not_null() & cal_b[confidence].is_not_null())
            blank = pl.when(calibrated).then(pl.col(confidence))
            cal_a, cal_b = cal_a.with_columns(blank), cal_b.with_columns(blank)
    return ra, rb, cal_a, cal_b, {name: int((ra[:, column[name]] > 0).sum()) for name in _COUNTED}


def _knows(rows: np.ndarray, column: dict[str, int], attribute: str) -> np.ndarray:
    """Which rows count for ``attribute``: labelled and predicted (its ``_known`` indicator; ages as bins too)."""
    indicators = [column[_COUNT[attribute]], *([column["age_binned"]] if attribute == "age" else [])]
    return (rows[:, indicators] > 0).any(axis=1)


def _why_unpaired(ra: np.ndarray, rb: np.ndarray, column: dict[str, int], attribute: str) -> str:
    """Why no pair counts for ``attribute``: a run that predicts it on no labelled image is named; for age, two runs
    that measure it only differently (one in years, the other by bin) are."""
    if ra.shape[0] == 0:  # rows are pairs labelled in both runs (each run's own labels)
        return "no pair labelled in both runs"
    lacking = [side for side, rows in (("A", ra), ("B", rb)) if not _knows(rows, column, attribute).any()]
    if len(lacking) == 2:
        return "no labelled image that either run predicts it on"
    if lacking:
        return f"{lacking[0]} predicts it on no labelled image"
    if attribute == "age":
        kinds = [{kind for kind in _MEASURED if (rows[:, column[kind]] > 0).any()} for rows in (ra, rb)]
        if kinds[0].isdisjoint(kinds[1]):
            a, b = (_MEASURED[kind] for side in kinds for kind in side)  # disjoint: one kind each
            return f"A's ages {a}, B's {b}"
    return "no labelled image that both runs predict it on"


def _paired(ra: np.ndarray, rb: np.ndarray, cal_a, cal_b, column, owned, rng, resamples, level, bins) -> dict:
    """Every compared metric on the pairs (row i of ``ra`` and of ``rb``: the same image) where both runs know its
    attribute (``_known_in_both``), and the percentile interval of B − A over resamples of the pairs drawn
    jointly. A metric without a pair says why: its attribute's reason (``_why_unpaired``), or, where the attribute
    has pairs labelled otherwise, the label it lacks (age bins and no exact age)."""
    unpaired = {attribute: _why_unpaired(ra, rb, column, attribute) for attribute in _COUNT}
    ra, rb, cal_a, cal_b, known = _known_in_both(ra, rb, cal_a, cal_b, column, owned)
    cal_a, cal_b = row_sums.calibration_arrays(cal_a), row_sums.calibration_arrays(cal_b)
    point_a = _values(ra.sum(axis=0), column) | row_sums.group_eces(cal_a, bins)
    point_b = _values(rb.sum(axis=0), column) | row_sums.group_eces(cal_b, bins)
    diffs = {}
    if ra.shape[0] >= 2:  # each resample draws the same pairs for A and B: their columns side by side
        a = row_sums.resample_columns(ra, cal_a, bins)
        b = row_sums.resample_columns(rb, cal_b, bins)
        sums = resampled_sums(rng, ra.shape[0], resamples, lambda i, j: np.hstack([a(i, j), b(i, j)]))
        draw_a, draw_b = (row_sums.resampled_values(half, column, bins, _values) for half in np.hsplit(sums, 2))
        diffs = {m.name: draw_b[m.name] - draw_a[m.name] for m in COMPARED}
    result, with_pairs = {}, {m.attribute for m in COMPARED if known[m.counted_by]}
    for metric in COMPARED:
        a, b = (float(p[metric.name]) for p in (point_a, point_b))
        n = known[metric.counted_by]
        entry = {"n": n, "a": a, "b": b, "diff": b - a, "low": None, "high": None, "reason": None}
        if n == 0 and metric.attribute in with_pairs:
            entry["reason"] = f"no pair with its age measured {_MEASURED[metric.counted_by]} in both runs"
        elif n == 0:
            entry["reason"] = unpaired[metric.attribute]
        elif not (np.isfinite(a) and np.isfinite(b)):
            entry["reason"] = f"undefined in {'A' if not np.isfinite(a) else 'B'} over the {n} pairs"
        elif n < 2:
            entry["reason"] = f"no interval from {n} pair"
        else:
            low, high, why = percentile_interval(diffs[metric.name], level)
            entry |= {"low": low, "high": high, "reason": why}
        result[metric.name] = entry
    return result


def compare_runs(
    a: Run,
    b: Run,
    *,
    slice_by: Sequence[str] = (),
    include_training: bool = False,
    resamples: int = fairness.MIN_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    bins: int = ECE_BINS,
) -> Comparison:
    """The comparison of run ``b`` with run ``a`` (module doc): metrics side by side with B − A and paired
    intervals, overall and per slice, the disagreements and their gallery."""
    if resamples < fairness.MIN_RESAMPLES:
        raise ValueError(f"resamples must be at least {fairness.MIN_RESAMPLES}, not {resamples}")
    b_frame, matched_by = matched_paths(a.frame, b.frame)
    b = replace(b, frame=b_frame)
    a, b, age_bins = _ages_in_bins(a, b)
    both = pl.concat(
        [labelled_rows(run.frame, include_training).with_columns(pl.lit(side).alias(_SIDE))
         for side, run in (("a", a), ("b", b))], how="diagonal_relaxed",
    )  # fmt: skip
    own = [c for c in both.columns if c not in (*OUTPUT_COLUMNS, _SIDE)]
    both, extra = slicing.slice_frame(both, slice_by, known=own)
    attributes = {key: SLICE_COLUMNS[key] for key in SLICE_BY} | {spec.name: spec.name for spec in extra}
    centre = both.get_column("true_age").cast(pl.Float64).mean() or 0.0
    exprs = [*row_sums.row_columns(centre), *_extra_rows()]
    column = {expr.meta.output_name(): index for index, expr in enumerate(exprs)}
    owned = _attribute_columns(column)
    rows_a, rows_b = (_rows(both.filter(pl.col(_SIDE) == side), exprs, attributes) for side in ("a", "b"))
    shared, pairs = shared_images(a.frame, b.frame, matched_by)
    index_a, index_b = pair_index(rows_a.paths, rows_b.paths, pairs)
    shared["labelled_pairs"] = len(index_a)
    rng = np.random.default_rng(seed)

    def compared(mask_a, mask_b, pair_mask) -> dict:
        point_a, counts_a = rows_a.point(mask_a, column, bins)
        point_b, counts_b = rows_b.point(mask_b, column, bins)
        paired = None
        if shared["paired"]:
            ia, ib = index_a[pair_mask], index_b[pair_mask]
            cal_a, cal_b = rows_a.calibration[ia], rows_b.calibration[ib]
            paired = _paired(
                rows_a.matrix[ia], rows_b.matrix[ib], cal_a, cal_b, column, owned, rng, resamples, level, bins
            )
        return {m.name: _entry(point_a, point_b, counts_a, counts_b, m, paired) for m in COMPARED}

    every_a, every_b = np.ones(len(rows_a.paths), bool), np.ones(len(rows_b.paths), bool)
    overall = compared(every_a, every_b, np.ones(len(index_a), bool))
    slices = {}
    for key, col in attributes.items():
        groups = []
        for group in _groups(both.get_column(col)):
            in_a, in_b = rows_a.groups[key] == group, rows_b.groups[key] == group
            pair_mask = in_a[index_a] & in_b[index_b]
            entries = compared(in_a, in_b, pair_mask)
            for name in _WITHIN_GROUP.get(key, ()):
                entries.pop(name)
            groups.append({"group": group, "n_a": int(in_a.sum()), "n_b": int(in_b.sum()),
                           "pairs": int(pair_mask.sum()), "metrics": entries})  # fmt: skip
        bins_of = next((spec.bins for spec in extra if spec.name == key), None)
        slices[key] = {"column": col, "bins": bins_of, "groups": groups}
    disagreements, gallery = disagreements_between(a.frame, b.frame, pairs)
    run_a, run_b = _run_summary(a, rows_a), _run_summary(b, rows_b)
    if run_a["name"] == run_b["name"]:  # e.g. two trainings of one version: the model files tell them apart
        for run in (run_a, run_b):
            run["name"] += f" ({run['model_source']})" if run["model_source"] else ""
    contents = {
        "a": run_a, "b": run_b, "shared": shared,
        "resamples": resamples, "seed": seed, "level": level, "age_bins": age_bins,
        "metrics": {m.name: {"attribute": m.attribute, "better": m.better, "unit": m.unit, "count": m.counted_by}
                    for m in COMPARED},
        "overall": overall, "slices": slices, "disagreements": disagreements,
        "gallery": {key: gallery_rows(table) for key, table in gallery.items()},
    }  # fmt: skip
    return Comparison(finite(contents), gallery)


def shown_metrics(compare: dict) -> list[str]:
    """The compared metrics worth a row on the page and in the terminal (``compare``: ``compare_runs``' contents):
    every one but the age-bin accuracy where neither run has an age labelled as a bin, and the exact-age metrics
    where neither has an exact age but bins are there (a FairFace comparison)."""
    counted = {name: entry["n_a"] + entry["n_b"] > 0 for name, entry in compare["overall"].items()}
    binned = any(counted[name] for name, meta in compare["metrics"].items() if meta["count"] == "age_binned")
    exact = any(counted[name] for name, meta in compare["metrics"].items() if meta["count"] == "age_known")
    hidden = {"age_binned"} if not binned else {"age_known"} if not exact else set()
    return [name for name, meta in compare["metrics"].items() if meta["count"] not in hidden]


def _groups(values: pl.Series) -> list[str]:
    """The groups of a slicing column over both runs, as text: an Enum's in its order, any other's sorted."""
    return values.drop_nulls().unique().sort().cast(pl.String).to_list()


def _ages_in_bins(a: Run, b: Run) -> tuple[Run, Run, dict | None]:
    """The runs, one's ages in years put in the other's bins where one predicts only years and the other only bins
    (``reporting.binned_ages``), and which was (``{"binned": "A", "bins": ["0-2", ...]}``; None: neither)."""
    for side, years, bins in (("A", a, b), ("B", b, a)):
        found = binned_like(years.frame, bins.frame)
        if found is not None:
            binned = replace(years, frame=found[0])
            a, b = (binned, b) if side == "A" else (a, binned)
            return a, b, {"binned": side, "bins": bin_names(found[1])}
    return a, b, None


def _run_summary(run: Run, rows: _Rows) -> dict:
    frame = run.frame
    models = frame.select("model_name", "model_version").unique().drop_nulls("model_name").sort("model_name")
    names = ", ".join(m if v in (None, "unknown") else f"{m} {v}" for m, v in models.iter_rows())
    predicted = frame.filter(pl.col("error").is_null())
    return {
        "predictions": str(Path(run.predictions).resolve()),
        "name": names or Path(run.predictions).stem,
        "models": models.to_dicts(),
        "model_source": None if run.foreign else recorded(run.predictions, MODEL_KEY).get("source"),
        "foreign": run.foreign,
        "labels": run.labels,
        "images": frame["path"].n_unique(),
        "predicted": predicted.height,
        "metric_rows": len(rows.paths),
        "attributes": [
            a
            for a in ("gender", "race", "age")
            if predicted[f"pred_{a}"].is_not_null().any()
            or (a == "age" and predicted["pred_age_low"].is_not_null().any())
        ],  # an age predicted as a bin is an age predicted
    }
