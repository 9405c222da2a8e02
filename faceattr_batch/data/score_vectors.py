"""Probabilities written as one vector per row: FairFace's classifier (its ``predict.py``) writes
``race_scores_fair`` and ``gender_scores_fair`` as NumPy prints an array, ``"[9.58e-01 5.59e-05 ...]"``, the classes
in its own order (``SCORE_VECTORS``). Each such column becomes one column per class, named ``<column>[<class>]``
(``race_scores_fair[east asian]``), which the foreign reader takes as it takes deepface's ``race.east asian``.
A Parquet's list column is read the same way. A value that is not a bracketed list of as many numbers as classes
is a problem, and its row's classes stay empty."""

from __future__ import annotations

import re

import polars as pl

from faceattr_batch.data.tables import LINE, as_text
from faceattr_batch.schema import RACE_PROB_COLUMNS

# the file's column (lower case) -> its classes, in the order of the vector
SCORE_VECTORS: dict[str, tuple[str, ...]] = {
    "race_scores_fair": (
        "white", "black", "latino hispanic", "east asian", "southeast asian", "indian", "middle eastern",
    ),
    "gender_scores_fair": ("male", "female"),
}  # fmt: skip
_ELEMENT = re.compile(r"^(?P<vector>\w+)\[(?P<name>[^\]]+)\]$")
_BRACKETED = r"^\[([^\[\]]*)\]$"


def element_class(column: str) -> str | None:
    """The class an expanded column holds (``race_scores_fair[east asian]`` -> ``east asian``), else None."""
    match = _ELEMENT.match(column.lower())
    return match["name"] if match and match["vector"] in SCORE_VECTORS else None


def expand_score_vectors(raw: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """``raw`` with each ``SCORE_VECTORS`` column (any case) beside one column per class, and the values that
    are not such a vector as problems (``tables.PROBLEM_SCHEMA``)."""
    problems, added = [], []
    for name in raw.columns:
        classes = SCORE_VECTORS.get(name.lower())
        if classes is None:
            continue
        if isinstance(raw.schema[name], pl.List | pl.Array):
            elements = raw[name].cast(pl.List(pl.String))
            text = elements.list.join(" ")
        else:
            text = as_text(raw[name])
            inside = text.str.extract(_BRACKETED)
            elements = inside.str.extract_all(r"[^\s,]+")
        fits = elements.list.len() == len(classes)
        bad = pl.DataFrame({"line": raw[LINE], "value": text, "fits": fits}).filter(
            pl.col("value").is_not_null() & ~pl.col("fits").fill_null(False)
        )
        reason = f"not a bracketed list of {len(classes)} numbers ({', '.join(classes)})"
        problems.append(bad.select("line", column=pl.lit(name), value="value", reason=pl.lit(reason)))
        kept = pl.select(pl.when(fits).then(elements)).to_series()
        added += [kept.list.get(i, null_on_oob=True).alias(f"{name}[{c}]") for i, c in enumerate(classes)]
    return raw.with_columns(added), problems


def shown_columns(columns: dict[str, str]) -> dict[str, str]:
    """``columns`` (ours -> the file's, as ``ForeignPredictions.columns``) as a report lists them: our five race
    probabilities read from the classes of one vector become one entry (``p_white … p_others``), not five that
    name its seven classes."""
    race = [ours for ours in RACE_PROB_COLUMNS if ours in columns]
    parts = [part for ours in race for part in columns[ours].split(" + ")]
    vectors = {part.split("[", 1)[0] for part in parts if element_class(part) is not None}
    if len(race) < len(RACE_PROB_COLUMNS) or len(vectors) != 1 or any(element_class(p) is None for p in parts):
        return dict(columns)
    (vector,) = vectors
    classes = len(SCORE_VECTORS[vector.lower()])
    shown = {ours: theirs for ours, theirs in columns.items() if ours not in race}
    return shown | {f"{race[0]} … {race[-1]}": f"{vector} ({classes} classes summed into our {len(race)})"}
