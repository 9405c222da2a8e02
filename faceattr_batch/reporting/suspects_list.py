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
from faceattr_batch.metrics.suspects import duplicate_conflicts, suspect_labels
from faceattr_batch.reporting.summary import labelled_rows

ATTRIBUTES = ("gender", "race", "age")
GALLERY_K = 12  # suspects shown per attribute on the page
NAMES = {"gender": GENDERS, "race": RACES}


@dataclass(frozen=True)
class Suspects:
    table: pl.DataFrame  # every listed (row, attribute), ranked by score within attribute (path, face_index where
    # the frame has it, attribute, given, suggested, score, rank, dup_group, group_labels)
    contents: dict  # metrics.json's ``suspects``
    gallery: dict[str, pl.DataFrame]  # attribute -> the frame rows of its top ``GALLERY_K`` (paths, face boxes)


def find_suspects(frame: pl.DataFrame) -> Suspects:
    """The suspects among ``frame``'s labelled rows: those ``suspect_labels`` flags among the rows not in training,
    and (with a ``dup_group`` column, from an index given as --labels) the members of duplicate groups whose labels
    disagree, training rows included: a conflict needs no model, only its suggestion does. ``contents``: the
    summary of ``suspect_labels``, ``counts`` (listed per attribute), ``duplicates`` (conflicting groups and rows
    listed for them, per attribute), ``trained_on`` (labelled rows not ranked) and its ``note``, and ``top``: the
    gallery's rows as listed."""
    labelled = labelled_rows(frame, include_training=True).with_row_index("_row")
    has_role = "training_role" in labelled.columns
    seen = (pl.col("training_role") == "train").fill_null(False) if has_role else pl.lit(False)
    trained_on = labelled.filter(seen).height
    rows = labelled.filter(~seen)
    flags, summary = suspect_labels(rows.drop("_row"))
    flags = flags.drop("path", strict=False).with_columns(rows["_row"])
    examined = labelled.join(flags, on="_row", how="left", maintain_order="left")
    table = _ranked(pl.concat([examined, duplicate_conflicts(labelled)], how="horizontal"))
    gallery, top = {}, {}
    for attribute in ATTRIBUTES:
        shown = table.filter((pl.col("attribute") == attribute) & (pl.col("rank") <= GALLERY_K))
        gallery[attribute] = labelled[shown["_row"].to_list()].drop("_row")
        top[attribute] = shown.drop("_row").to_dicts()
    note = None
    if trained_on:
        note = f"{trained_on} rows are images this model was trained on: not ranked (their labels look right to it)"
    listed = dict(table.group_by("attribute").len().iter_rows())
    in_groups = table.filter(pl.col("dup_group").is_not_null())
    contents = summary | {
        "counts": {a: listed.get(a, 0) for a in ATTRIBUTES},
        "duplicates": {
            "groups": in_groups["dup_group"].n_unique(),
            "rows": {a: in_groups.filter(pl.col("attribute") == a).height for a in ATTRIBUTES},
        },
        "trained_on": trained_on,
        "note": note,
        "top": top,
    }
    return Suspects(table.drop("_row"), contents, gallery)


def _ranked(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per listed (row, attribute): flagged by the model, or in a conflicting duplicate group with a label
    other than the group's suggestion (every member where there is none); labels by name (ages in years), by score
    within attribute (rows the model did not examine last)."""
    keys = ["path", *(["face_index"] if "face_index" in rows.columns else [])]
    parts = []
    for attribute in ATTRIBUTES:
        given, group_suggested = pl.col(f"true_{attribute}"), pl.col(f"{attribute}_group_suggested")
        in_conflict = pl.col(f"{attribute}_group_labels").is_not_null()
        listed = pl.col(f"{attribute}_suspect").fill_null(False) | (
            in_conflict & given.ne_missing(group_suggested).fill_null(True)
        )
        suggested = pl.when(in_conflict).then(pl.coalesce(group_suggested, pl.col(f"{attribute}_suggested")))
        suggested = suggested.otherwise(pl.col(f"{attribute}_suggested"))
        if attribute in NAMES:  # by name, from the vocabulary (an unknown code: null, and never flagged)
            given, suggested = (code_label(c, NAMES[attribute]) for c in (given, suggested))
        parts.append(
            rows.filter(listed)
            .sort(f"{attribute}_score", descending=True, nulls_last=True, maintain_order=True)
            .select(
                *keys,
                pl.lit(attribute).alias("attribute"),
                given.cast(pl.String).alias("given"),
                suggested.cast(pl.String).alias("suggested"),
                pl.col(f"{attribute}_score").alias("score"),
                pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias("rank"),
                pl.when(in_conflict)
                .then(pl.col("dup_group") if "dup_group" in rows.columns else None)
                .cast(pl.Int64)
                .alias("dup_group"),
                pl.col(f"{attribute}_group_labels").alias("group_labels"),
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
