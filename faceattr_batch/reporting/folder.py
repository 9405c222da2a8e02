"""The report folder: metrics.json, breakdown.parquet, PNG plots and one self-contained report.html, from a
predictions frame read once (``summary.read_predictions``) and its summary (``summary.summarize``).

Slicing attributes: race, gender and age band (``metrics.SLICE_BY``) and the frame's own columns named by
``slice_by`` (``metrics.slicing``: ``source``, ``brightness:4``). Each gets a table alone (``by_<attribute>``), a
fairness summary (``fairness``: gaps between its groups, ``metrics.fairness``), per-group confusion matrices and
calibration curves (``group_calibration``, one figure per attribute); each extra one is also crossed with race ×
gender × age band (``slices``, and its rows in breakdown.parquet). Wherever rows are labelled, the suspect
labels (``suspects_list``): suspects.parquet, metrics.json's ``suspects`` and the page's section.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import replacing, write_json, write_parquet_atomically
from faceattr_batch.metrics import attributes as metrics
from faceattr_batch.metrics import fairness, slicing
from faceattr_batch.progress import progress_bar
from faceattr_batch.reporting import figures, page
from faceattr_batch.reporting.compare import Comparison
from faceattr_batch.reporting.summary import labelled_rows
from faceattr_batch.reporting.suspects_list import Suspects, find_suspects, write_suspects
from faceattr_batch.schema import OUTPUT_COLUMNS

WORST_K = 12
# a worst error's fields in metrics.json, then its labels by name
WORST_FIELDS = ("path", "true_age", "pred_age", "age_low", "age_high", "abs_age_error", "confidence")
WEAKEST_K = 5
WEAKEST_METRICS = ("age_mae", "gender_accuracy", "race_accuracy")
CROSS = " · "  # between the labels of a race × gender × age band slice's name
CALIBRATION_BINS = 10  # equal-width probability bins of the per-group reliability curves


def write_report(
    frame: pl.DataFrame,
    summary: dict,
    predictions: Path,
    report_dir: Path,
    *,
    slice_by: Sequence[str] = (),
    min_group: int = 30,
    compare: Comparison | None = None,
    suspects: Suspects | None = None,
    progress: bool = True,
) -> Path:
    """Write the report files into ``report_dir``; returns the path of ``report.html``. ``slice_by``: columns of
    ``frame`` to slice by besides race, gender and age band (``name`` or ``name:k`` for k quantile bins);
    ``min_group``: the fewest images of a group compared in the fairness summary and ranked among the weakest;
    ``compare``: another run compared with this one (metrics.json's ``compare``, and its section of the page);
    ``suspects``: the suspect labels when the caller has found them already (else found here); ``progress``: a bar
    over the fairness summaries (their bootstraps take minutes over a million rows)."""
    if min_group < 2:
        raise FaceattrError(f"--min-group must be at least 2, not {min_group}")
    own_columns = [c for c in frame.columns if c not in OUTPUT_COLUMNS]
    # the metrics' rows: without those of images the model was trained on, unless the summary kept them
    metric_rows = labelled_rows(frame, summary["training"]["included"])
    labelled, extra = slicing.slice_frame(metric_rows, slice_by, known=own_columns)
    report_dir = Path(report_dir)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FaceattrError(f"cannot create {report_dir}: {err.strerror or err}") from None
    contents = _headline(frame, summary, predictions)
    attributes = [*metrics.SLICE_BY, *(spec.name for spec in extra)]
    contents["slice_by"] = [
        {"attribute": key, "column": metrics.SLICE_COLUMNS.get(key, key), "bins": None} for key in metrics.SLICE_BY
    ] + [{"attribute": spec.name, "column": spec.name, "bins": spec.bins} for spec in extra]
    contents["min_group"] = min_group
    plots: dict[str, Path] = {}
    sections: dict = {}
    written: set[Path] = set()  # the files this report writes besides metrics.json and report.html
    if labelled.height:
        crossed = {
            ",".join(by): metrics.breakdown(labelled, by, intervals=True)
            for by in [metrics.SLICE_BY, *([spec.name, *metrics.SLICE_BY] for spec in extra)]
        }
        write_parquet_atomically(breakdown_rows(crossed), report_dir / "breakdown.parquet")
        written.add(report_dir / "breakdown.parquet")
        by = {key: metrics.breakdown(labelled, [key], intervals=True) for key in attributes}
        worst = metrics.worst_errors(labelled, WORST_K)
        contents |= {
            "overall": summary["metrics"],
            "gender_confusion": metrics.confusion_matrix(labelled, "gender"),
            "race_confusion": metrics.confusion_matrix(labelled, "race"),
            "calibration": {
                **metrics.calibration_errors(labelled),
                "age_interval_coverage_80": metrics.age_interval_coverage(labelled),
            },
            **{f"by_{key}": table.to_dicts() for key, table in by.items()},
            "slices": {key: table.to_dicts() for key, table in crossed.items()},
            **fairness_contents(labelled, attributes, min_group, progress),
            "worst": {key: worst_rows(table) for key, table in worst.items()},
        }
        plots = figures.draw(labelled, contents, by, metrics.calibration(labelled), report_dir)
        for attribute, path in figures.draw_group_calibration(contents["group_calibration"], report_dir).items():
            contents["group_calibration"][attribute]["figure"] = path.name
            plots[path.stem] = path
        sections = {"crossed": crossed, "worst": worst}
    if labelled_rows(frame, include_training=True).height:  # suspect labels: suspects.parquet and their section
        if suspects is None:
            suspects = find_suspects(frame)
        write_suspects(suspects.table, report_dir / "suspects.parquet")
        written.add(report_dir / "suspects.parquet")
        contents["suspects"], sections["suspects"] = suspects.contents, suspects.gallery
    if compare is not None:
        contents["compare"] = compare.contents
        sections["compare"] = compare.gallery
    written |= set(plots.values())
    earlier = _earlier_files(report_dir)  # read before metrics.json is replaced
    contents["files"] = sorted(path.name for path in written)
    write_json(report_dir / "metrics.json", contents)  # ratios over zero cases (NaN, inf) become null
    target = report_dir / "report.html"
    with replacing(target) as tmp:
        tmp.write_text(page.render(contents, plots, sections), encoding="utf-8")
    for name in earlier - {path.name for path in written}:
        (report_dir / name).unlink(missing_ok=True)
    return target


def _own_name(name: object) -> bool:
    """A name this module writes besides metrics.json and report.html."""
    own = (*figures.PLOT_NAMES, "breakdown.parquet", "suspects.parquet")
    return isinstance(name, str) and (name in own or (name.startswith("calibration_by_") and name.endswith(".png")))


def _earlier_files(report_dir: Path) -> set[str]:
    """The files an earlier report in ``report_dir`` listed in its metrics.json (``files``), which this one removes
    where it does not write them again (a plot without data now, a breakdown of labels now absent), so the folder
    holds one report. Only names the earlier report wrote: a file of the user's with a report's name stays."""
    try:
        listed = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):  # none, not JSON, or not a report's object
        return set()
    return {name for name in listed if _own_name(name) and "/" not in name} if isinstance(listed, list) else set()


def writes_file(name: str) -> bool:
    """Whether a report writes a file of this name into its folder (``atomic.refuse_overlap`` refuses a report folder
    that holds an input file of such a name)."""
    return _own_name(name) or name in ("metrics.json", "report.html")


def breakdown_rows(crossed: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """breakdown.parquet: the crossed tables one under the other, ``slices`` naming each row's table
    (``race,gender,age_band``; ``source,race,gender,age_band``), an attribute's column null where not crossed."""
    keys = list(dict.fromkeys(key for name in crossed for key in name.split(",")))
    tables = [table.with_columns(pl.lit(name).alias("slices")) for name, table in crossed.items()]
    table = pl.concat(tables, how="diagonal_relaxed")
    return table.select("slices", *keys, pl.exclude("slices", *keys))


def fairness_contents(labelled: pl.DataFrame, attributes: list[str], min_group: int, progress: bool = False) -> dict:
    """metrics.json's ``fairness`` (attribute -> ``fairness.fairness_summary``), ``weakest`` (the race × gender ×
    age band slices ranked by the pessimistic bound, ``WEAKEST_METRICS``), ``group_confusion`` and
    ``group_calibration`` (``group_calibration``)."""
    columns = {key: metrics.SLICE_COLUMNS.get(key, key) for key in attributes}
    name = pl.concat_str([pl.col(c).cast(pl.String) for c in metrics.SLICE_COLUMNS.values()], separator=CROSS)
    # each slicing with its frame, the race x gender x age band cells last; a bar: over a million rows each
    # slicing's bootstrap takes minutes
    cells_frame = labelled.with_columns(name.alias("_slice"))
    slicings = [(labelled, column) for column in columns.values()] + [(cells_frame, "_slice")]
    bar = progress_bar(slicings, desc="report: fairness", unit="slicing", enabled=progress)
    *done, cells = [fairness.fairness_summary(frame, column, min_group=min_group) for frame, column in bar]
    summaries = dict(zip(columns, done, strict=True))
    ranked = fairness.weakest_slices(cells, list(WEAKEST_METRICS), k=WEAKEST_K)
    by_group = {group["group"]: group["metrics"] for group in cells["groups"]}
    weakest = {
        "slices": len(cells["groups"]),
        "min_group": min_group,
        "ranked": sum(group["n"] >= min_group for group in cells["groups"]),
        "too_few": len(cells["too_few"]),
        "largest": max((group["n"] for group in cells["groups"]), default=0),
        "metrics": {
            metric: [row | {k: by_group[row["group"]][metric][k] for k in ("low", "high")} for row in rows]
            for metric, rows in ranked.items()
        },
    }
    confusion, calibration = {}, {}
    for key, column in columns.items():
        sliced = labelled.filter(pl.col(column).is_not_null()).sort(column, maintain_order=True)
        groups = list(zip(summaries[key]["groups"], sliced.partition_by(column, maintain_order=True), strict=True))
        confusion[key] = [
            {
                "group": summary["group"],
                "n": part.height,
                "gender": metrics.confusion_matrix(part, "gender"),
                "race": metrics.confusion_matrix(part, "race"),
            }
            for summary, part in groups
        ]
        calibration[key] = group_calibration(groups, min_group, ("race",) if key == "gender" else ("gender", "race"))
    return {"fairness": summaries, "weakest": weakest, "group_confusion": confusion, "group_calibration": calibration}


def group_calibration(groups: list[tuple[dict, pl.DataFrame]], min_group: int, attributes: tuple[str, ...]) -> dict:
    """metrics.json's ``group_calibration.<slicing attribute>``: for each group (its fairness summary entry and its
    rows) with at least ``min_group`` rows, the reliability bins of ``metrics.calibration`` (``bin``, ``n``, mean
    ``confidence``, ``observed`` share) of each of ``attributes``: gender (P(female) vs the share female) and race
    (the top race probability vs accuracy); the smaller groups in ``too_few``. Slicing by gender draws no gender
    curve: inside one gender the share female is 0 or 1."""
    drawn, too_few = [], []
    for summary, part in groups:
        if part.height < min_group:
            too_few.append({"group": summary["group"], "n": part.height})
            continue
        tables = metrics.calibration(part, CALIBRATION_BINS)
        drawn.append(
            {"group": summary["group"], "n": part.height} | {key: tables[key].to_dicts() for key in attributes}
        )
    note = None if "gender" in attributes else "no gender curve: inside one gender the share female is 0 or 1"
    return {
        "bins": CALIBRATION_BINS, "min_group": min_group, "attributes": list(attributes), "note": note,
        "groups": drawn, "too_few": too_few, "figure": None,  # its PNG's file name, once drawn
    }  # fmt: skip


def _headline(frame: pl.DataFrame, summary: dict, predictions: Path) -> dict:
    models = frame.select("model_name", "model_version").unique().sort("model_name").to_dicts()
    return {
        "predictions": str(Path(predictions).resolve()),
        "tool_version": __version__,
        "models": models,
        **{key: summary[key] for key in ("images", "predicted", "labelled", "errors", "labels", "training")},
        "foreign": summary.get("foreign"),  # another tool's table (``ForeignPredictions.summary``)
        "sample": summary.get("sample"),  # predict --sample: {images, of, seed}, as the caller read it
        "pred_gender_counts": _counts(frame["pred_gender_label"]),
        "pred_race_counts": _counts(frame["pred_race_label"]),
    }


def _counts(labels: pl.Series) -> dict[str, int]:
    """Rows per label, every label of the Enum in its order (zeros included)."""
    counts = dict(labels.drop_nulls().value_counts().iter_rows())
    return {name: counts.get(name, 0) for name in labels.dtype.categories}


def worst_rows(table: pl.DataFrame) -> list[dict]:
    """A ``metrics.worst_errors`` table as metrics.json lists it: paths, ages, confidence and the labels by name."""
    labels = [
        pl.col(f"{side}_{attribute}_label").cast(pl.String).alias(f"{side}_{attribute}")
        for side in ("true", "pred")
        for attribute in ("gender", "race")
    ]
    return table.select(*[c for c in WORST_FIELDS if c in table.columns], *labels).to_dicts()
