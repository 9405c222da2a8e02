"""A predictions Parquet read once, and the counts and headline metrics that predict's summary and the report
share (images, predicted, labelled, errors by kind, overall metrics with 95% intervals)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import finite
from faceattr_batch.metrics import attributes as metrics
from faceattr_batch.schema import LABEL_COLUMNS, OUTPUT_COLUMNS, error_counts

# what the summary and the report read (the flags and errors derived from these, and the face fields the
# thumbnails do not need, stay on disk)
READ_COLUMNS = tuple(
    c
    for c in OUTPUT_COLUMNS
    if c not in ("gender_correct", "race_correct", "age_error", "pred_age_band", "face_index", "det_score", "landmarks")
)


def read_predictions(predictions: Path | str) -> pl.DataFrame:
    """The ``READ_COLUMNS`` of a predictions Parquet, or one line saying why it is not one."""
    predictions = Path(predictions)
    if not predictions.is_file():
        raise FaceattrError(f"{predictions}: no such predictions file")
    try:
        columns = pl.read_parquet_schema(predictions)
    except Exception as err:  # polars raises several types for non-Parquet bytes
        raise FaceattrError(f"{predictions}: not a readable Parquet file ({first_line(err, 160)})") from None
    missing = [c for c in READ_COLUMNS if c not in columns]
    if missing:
        raise FaceattrError(
            f"{predictions}: not a `predict` output of this version (missing columns: {', '.join(missing)}); "
            "predict again"
        )
    return pl.read_parquet(predictions, columns=list(READ_COLUMNS))


def labelled_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with at least one true label."""
    return frame.filter(pl.any_horizontal([pl.col(c).is_not_null() for c in LABEL_COLUMNS]))


def summarize(frame: pl.DataFrame, labels: dict | None = None) -> dict:
    """images (distinct paths), predicted (rows without error), labelled, errors by kind, the overall metrics
    with their 95% intervals (None without labels; NaN and infinities as None) and ``labels``: a labels file's
    counts and first problems (``data.label_files.MatchedLabels.summary``; None when the labels came without one)."""
    labelled = labelled_rows(frame)
    return {
        "images": frame["path"].n_unique(),
        "predicted": frame["error"].is_null().sum(),
        "labelled": labelled.height,
        "errors": error_counts(frame),
        "metrics": finite(metrics.overall(labelled, intervals=True)) if labelled.height else None,
        "labels": labels,
    }
