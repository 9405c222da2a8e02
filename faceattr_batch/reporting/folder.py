"""The report folder: metrics.json, breakdown.parquet, PNG plots and one self-contained report.html, from a
predictions frame read once (``summary.read_predictions``) and its summary (``summary.summarize``)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import replacing, write_json
from faceattr_batch.metrics import attributes as metrics
from faceattr_batch.reporting import figures, page
from faceattr_batch.reporting.summary import labelled_rows

WORST_K = 12
# a worst error's fields in metrics.json, then its labels by name
WORST_FIELDS = ("path", "true_age", "pred_age", "age_low", "age_high", "abs_age_error", "confidence")


def write_report(frame: pl.DataFrame, summary: dict, predictions: Path, report_dir: Path) -> Path:
    """Write the report files into ``report_dir``; returns the path of ``report.html``."""
    report_dir = Path(report_dir)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FaceattrError(f"cannot create {report_dir}: {err.strerror or err}") from None
    labelled = labelled_rows(frame)
    contents = _headline(frame, summary, predictions)
    plots: dict[str, Path] = {}
    sections: dict = {}
    if labelled.height:
        breakdown = metrics.breakdown(labelled, metrics.SLICE_BY, intervals=True)
        breakdown.write_parquet(report_dir / "breakdown.parquet")
        by = {key: metrics.breakdown(labelled, [key], intervals=True) for key in metrics.SLICE_BY}
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
            "worst": {key: worst_rows(table) for key, table in worst.items()},
        }
        plots = figures.draw(labelled, contents, by, metrics.calibration(labelled), report_dir)
        sections = {"breakdown": breakdown, "by": by, "worst": worst}
    write_json(report_dir / "metrics.json", contents)  # ratios over zero cases (NaN, inf) become null
    target = report_dir / "report.html"
    with replacing(target) as tmp:
        tmp.write_text(page.render(contents, plots, sections), encoding="utf-8")
    return target


def _headline(frame: pl.DataFrame, summary: dict, predictions: Path) -> dict:
    models = frame.select("model_name", "model_version").unique().sort("model_name").to_dicts()
    return {
        "predictions": str(Path(predictions).resolve()),
        "tool_version": __version__,
        "models": models,
        **{key: summary[key] for key in ("images", "predicted", "labelled", "errors", "labels")},
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
