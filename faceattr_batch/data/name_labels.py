"""True labels read from UTKFace-style file names (``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg``): how
``predict`` labels its rows without a labels file, and how ``report`` labels another tool's table without one."""

from __future__ import annotations

import os

import polars as pl

from faceattr_batch.data.labels import parse_frame
from faceattr_batch.schema import LABEL_COLUMNS, derived_columns, true_label_codes

# FairFace's predict.py writes each face it detects in X.jpg.chip.jpg as X_face<k>.jpg: X still holds the labels
DETECTED_FACE_SUFFIX = r"_face\d+"
_DETECTED_FACE = DETECTED_FACE_SUFFIX + r"(\.[^./\\]+)$"


def labels_from_names(keys: list[str]) -> pl.DataFrame:
    """True labels parsed from the UTKFace-style names ending ``keys`` (display_paths; null where one does not say)."""
    path = pl.col("name").str.replace_all(os.altsep, os.sep, literal=True) if os.altsep else pl.col("name")
    names = pl.DataFrame({"name": keys}, schema={"name": pl.String}).select(path.str.split(os.sep).list.last())
    return parse_frame(names, "name").select(true_label_codes())


def attach_name_labels(predictions: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``predictions`` (in the schema) with the labels their paths' names give in place of their ``LABEL_COLUMNS``
    (a detected face's ``_face<k>`` set aside), the readable labels recomputed, and how many rows got one. As
    with a labels file (``label_files.attach_labels``), the faces of a photo with several get none: a label
    describes one person."""
    photos = predictions["path"].str.replace(_DETECTED_FACE, "$1")
    truth = labels_from_names(photos.to_list())
    one_face = pl.len().over(photos) == 1  # X_face0 and X_face1: two faces of one photo
    labelled = predictions.with_columns(truth.get_columns()).with_columns(
        pl.when(one_face).then(pl.col(c)).alias(c) for c in LABEL_COLUMNS
    )
    derived = [expr for expr in derived_columns() if expr.meta.output_name() in predictions.columns]
    labelled = labelled.with_columns(derived)
    count = labelled.select(pl.any_horizontal(pl.col(c).is_not_null() for c in LABEL_COLUMNS).sum()).item()
    return labelled, int(count)
