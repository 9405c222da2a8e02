"""A predictions Parquet read once, and the counts and headline metrics that predict's summary and the report
share (images, predicted, labelled, errors by kind, overall metrics with 95% intervals, images the model saw).

``labelled_rows`` is the one place the metrics choose their rows: labelled ones, less those of images the model was
trained on (``training_role`` train: ``models.seen_images``) unless ``include_training``. The validation-role rows
stay (the model never learned from them) but are also measured apart (``training_summary``)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError, first_line, require_file
from faceattr_batch.io.atomic import finite
from faceattr_batch.metrics import attributes as metrics
from faceattr_batch.schema import (
    AGE_BIN_FIELDS,
    LABEL_COLUMNS,
    OUTPUT_COLUMNS,
    PRED_AGE_BIN_FIELDS,
    TRAINING_ROLE,
    TRAINING_ROLES,
    error_counts,
    with_age_bins,
)

# what the summary and the report read (the flags and errors derived from these, and the face fields the
# thumbnails do not need, stay on disk)
READ_COLUMNS = tuple(
    c
    for c in OUTPUT_COLUMNS
    if c not in ("gender_correct", "race_correct", "age_error", "pred_age_band", "det_score", "landmarks")
)


def read_predictions(predictions: Path | str) -> pl.DataFrame:
    """The ``READ_COLUMNS`` of a predictions Parquet, or one line saying why it is not one."""
    predictions = Path(predictions)
    require_file(predictions, "", "predictions file")
    try:
        columns = pl.read_parquet_schema(predictions)
    except Exception as err:  # polars raises several types for non-Parquet bytes
        raise FaceattrError(f"{predictions}: not a readable Parquet file ({first_line(err, 160)})") from None
    # files written before the age bin columns were added have none: read as no bin
    missing = [c for c in READ_COLUMNS if c not in columns and c not in AGE_BIN_FIELDS | PRED_AGE_BIN_FIELDS]
    if missing:
        raise FaceattrError(
            f"{predictions}: not a `predict` output of this version (missing columns: {', '.join(missing)}); "
            "predict again"
        )
    frame = with_age_bins(pl.read_parquet(predictions, columns=[c for c in READ_COLUMNS if c in columns]))
    frame = frame.select(READ_COLUMNS)
    # a NaN written by another program into a float output is no value (a traceback in the calibration bins, else)
    return frame.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))


def labelled_rows(frame: pl.DataFrame, include_training: bool = False) -> pl.DataFrame:
    """The rows the metrics read: at least one true label, and not of an image the model was trained on (unless
    ``include_training``)."""
    keep = pl.any_horizontal([pl.col(c).is_not_null() for c in LABEL_COLUMNS if c in frame.columns])
    if not include_training and "training_role" in frame.columns:
        keep &= pl.col("training_role").ne_missing(pl.lit("train", TRAINING_ROLE))
    return frame.filter(keep)


def summarize(frame: pl.DataFrame, labels: dict | None = None, include_training: bool = False) -> dict:
    """images (distinct paths), predicted (rows without error), labelled (rows with a label), errors by kind, the
    overall metrics with their 95% intervals over ``labelled_rows`` (None without labels; NaN and infinities as
    None), ``labels``: a labels file's counts and first problems (``data.label_files.MatchedLabels.summary``; None
    when the labels came without one) and ``training`` (``training_summary``)."""
    labelled = labelled_rows(frame, include_training)
    return {
        "images": frame["path"].n_unique(),
        "predicted": frame["error"].is_null().sum(),
        "labelled": labelled_rows(frame, include_training=True).height,
        "errors": error_counts(frame),
        "metrics": finite(metrics.overall(labelled, intervals=True)) if labelled.height else None,
        "labels": labels,
        "training": training_summary(frame, include_training),
    }


def training_summary(frame: pl.DataFrame, include_training: bool) -> dict:
    """The images the model saw: ``recorded`` (whether the predictions say: the model has a seen-images file),
    ``train`` / ``validation`` (images, distinct paths, in each role), ``included`` (the train-role rows kept in the
    metrics), ``left_out`` (labelled rows the metrics left out), ``validation_metrics`` (the overall metrics of
    the validation-role rows alone; None without any) and ``notes``: the reasons, as predict and the report print
    them."""
    if "in_training" not in frame.columns:
        frame = frame.with_columns(in_training=pl.lit(None, pl.Boolean), training_role=pl.lit(None, TRAINING_ROLE))
    role = pl.col("training_role")
    images = {name: frame.filter(role == name)["path"].n_unique() for name in TRAINING_ROLES}
    validation = labelled_rows(frame.filter(role == "validation"), include_training=True)
    every = labelled_rows(frame, include_training=True).height
    training = {
        "recorded": bool(frame["in_training"].is_not_null().any()),
        **images,
        "included": include_training,
        "left_out": every - labelled_rows(frame, include_training).height,
        "validation_metrics": finite(metrics.overall(validation, intervals=True)) if validation.height else None,
    }
    return training | {"notes": _training_notes(training)}


def _training_notes(training: dict) -> list[str]:
    notes = []
    if training["train"]:
        kept, left_out = (
            "kept in the metrics (--include-training)",
            "left out of the metrics (--include-training keeps them)",
        )
        rule = kept if training["included"] else left_out
        notes.append(f"{training['train']} images were used to train this model: {rule}")
    if training["validation"]:
        note = f"{training['validation']} images chose its checkpoints and temperatures (validation role): kept"
        alone = training["validation_metrics"]
        if alone:
            age = f"age MAE {_shown(alone, 'age_mae', percent=False)}"
            if alone.get("n_age_bin") and not alone["n_age"]:  # ages labelled as bins only (FairFace)
                age = f"age inside its bin {_shown(alone, 'age_bin_accuracy')}"
            note += f"; alone: gender {_shown(alone, 'gender_accuracy')}, race {_shown(alone, 'race_accuracy')}, {age}"
        notes.append(note)
    return notes


def sample_note(sample: dict) -> str:
    """What a ``predict --sample`` run measured: for the terminal and the report page."""
    return (
        f"a seeded random sample: {sample['images']} of the {sample['of']} listed images (--sample-seed "
        f"{sample['seed']}); its figures and intervals estimate the whole folder's"
    )


def _shown(metrics: dict, key: str, percent: bool = True) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{100 * value:.1f}%" if percent else f"{value:.2f} y"
