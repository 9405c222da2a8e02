"""The report's suspect labels (issue 20): ``metrics.suspects.suspect_labels`` on the labelled rows of images the
model did not see, as one ranked list (suspects.parquet, or ``--suspects FILE``), metrics.json's ``suspects`` and
the rows behind the page's gallery.

Out-of-sample only: a model is too sure of the labels it learned, so the rows of images it was trained on
(``training_role`` train) are counted, not ranked. The validation role's images only chose its checkpoints and
temperatures: their labels were never fitted, so they are ranked (the issue's own measurement is on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from faceattr_batch.data.labels import GENDERS, RACES, code_label
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import replacing
from faceattr_batch.metrics.suspects import suspect_labels
from faceattr_batch.reporting.summary import labelled_rows

ATTRIBUTES = ("gender", "race", "age")
GALLERY_K = 12  # suspects shown per attribute on the page
NAMES = {"gender": GENDERS, "race": RACES}


@dataclass(frozen=True)
class Suspects:
    table: pl.DataFrame  # every flagged (row, attribute), ranked by score within attribute (path,
    # face_index where the frame has it, attribute, given, suggested, score, rank)
    contents: dict  # metrics.json's ``suspects``
    gallery: dict[str, pl.DataFrame]  # attribute -> the frame rows of its top ``GALLERY_K`` (paths, face boxes)


def find_suspects(frame: pl.DataFrame) -> Suspects:
    """The suspects among ``frame``'s labelled rows that are not in training. ``contents``: the summary of
    ``suspect_labels`` and ``counts`` (flagged per attribute), ``trained_on`` (labelled rows not ranked) and its
    ``note``, and ``top``: the gallery's rows as listed."""
    labelled = labelled_rows(frame, include_training=True)
    has_role = "training_role" in labelled.columns
    seen = (pl.col("training_role") == "train").fill_null(False) if has_role else pl.lit(False)
    trained_on = labelled.filter(seen).height
    rows = labelled.filter(~seen)
    flags, summary = suspect_labels(rows)
    table = _ranked(rows, flags)
    gallery, top = {}, {}
    for attribute in ATTRIBUTES:
        shown = table.filter((pl.col("attribute") == attribute) & (pl.col("rank") <= GALLERY_K))
        gallery[attribute] = rows[shown["_row"].to_list()]
        top[attribute] = shown.drop("_row").to_dicts()
    note = None
    if trained_on:
        note = f"{trained_on} rows are images this model was trained on: not ranked (their labels look right to it)"
    contents = summary | {
        "counts": {a: summary[a]["flagged"] for a in ATTRIBUTES},
        "trained_on": trained_on,
        "note": note,
        "top": top,
    }
    return Suspects(table.drop("_row"), contents, gallery)


def _ranked(rows: pl.DataFrame, flags: pl.DataFrame) -> pl.DataFrame:
    """One row per flagged (row, attribute): the labels by name (ages in years), by score within attribute."""
    keys = ["path", *(["face_index"] if "face_index" in rows.columns else [])]
    position = pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row")
    parts = []
    for attribute in ATTRIBUTES:
        given, suggested = pl.col(f"true_{attribute}"), pl.col(f"{attribute}_suggested")
        if attribute in NAMES:  # by name, from the vocabulary (an unknown code: null, and never flagged)
            given, suggested = (code_label(c, NAMES[attribute]) for c in (given, suggested))
        part = pl.concat(
            [rows.select(*keys, given.cast(pl.String).alias("given")), flags.drop("path", strict=False)],
            how="horizontal",
        )
        parts.append(
            part.with_columns(position)
            .filter(pl.col(f"{attribute}_suspect"))
            .sort(f"{attribute}_score", descending=True, maintain_order=True)
            .select(
                *keys,
                pl.lit(attribute).alias("attribute"),
                "given",
                suggested.cast(pl.String).alias("suggested"),
                pl.col(f"{attribute}_score").alias("score"),
                pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias("rank"),
                "_row",
            )
        )
    return pl.concat(parts)


def list_format(target: Path | str) -> str:
    """The ranked list's format by ``target``'s suffix: parquet or csv (anything else refused)."""
    suffix = Path(target).suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise FaceattrError(f"--suspects {target}: write a .parquet or a .csv file, not {suffix or 'no suffix'}")
    return suffix[1:]


def write_suspects(table: pl.DataFrame, target: Path | str) -> Path:
    """The ranked list as Parquet or CSV, by ``target``'s suffix."""
    target = Path(target)
    csv = list_format(target) == "csv"
    with replacing(target) as tmp:
        if csv:
            table.write_csv(tmp)
        else:
            table.write_parquet(tmp)
    return target
