"""Another tool's predictions (deepface, insightface, a model of your own) -> a frame in the predictions schema
(``schema.PREDICTION_FIELDS``), so ``report`` audits them like ``predict``'s own output.

The table: a CSV (comma, tab or semicolon) or a Parquet, one row per face, with a column naming the image and any
of a predicted gender, race and age. The caller names the columns (``columns={"path": "img", "gender": "sex"}``;
``None`` for an attribute leaves it out) or they are found among ``COLUMN_SPELLINGS``, in any case, the first
spelling present winning (so ``pred_age`` beats ``age``, which may be a true label).

Values, read as follows (anything else is a problem, that value null):

- gender: ``male``/``female``, ``m``/``f``, ``man``/``woman`` (deepface's ``dominant_gender``), any case; the numbers
  0 and 1 in our convention, 0 male / 1 female, unless ``gender_one_is="male"`` says the tool writes 1 for male
  (insightface's ``gender``). Nothing guesses which: a numeric gender is read as ours until told otherwise.
- p_female: P(female), 0..1, or in percent (deepface's ``gender.Woman``): the gender probability columns (with
  ``gender.Man`` where there is one) whose largest value is above ``PERCENT_ABOVE`` are divided by 100 (a value above
  100 is then a problem; the summary's ``percent`` names those columns); a value over 1 by float rounding is 1.
  Without one, ``1 - p_male`` (``gender.Man``); without a gender column, ``pred_gender`` is ``p_female >= 0.5``, as
  ``predict`` decides.
- race: our five names (``data.labels.RACES``) or codes 0..4, or the classes of ``OTHER_RACES`` (deepface's six,
  FairFace's seven; ``_``/``-`` read as spaces), mapped to ours. Per-class probabilities, ``race.<class>`` or
  ``p_<class>`` (deepface's ``race.asian`` ... ``race.latino hispanic``, in percent when any is above 1), become
  ``p_white`` ... ``p_others``, a class of ours summing the classes mapped to it (a class of ours no column maps
  to is null); without a race column, ``pred_race`` is the most probable of the five. FairFace's classifier
  writes its probabilities as vectors (``race_scores_fair``, ``gender_scores_fair``): ``data.score_vectors``
  splits them into a column per class first.
- age: years (a float); a negative one or one above ``MAX_AGE`` is a problem. Or a bin (FairFace's classifier:
  "20-29", "more than 70"): ``pred_age_low`` / ``pred_age_high``, ``pred_age`` null.

A row without a path is not read (a problem); a row all of whose predictions are empty or unreadable gets the
error "no prediction". A path on several rows (several faces in a photo) gets face_index 0, 1, ... in file order.
Problems carry the line an editor shows (the header is line 1) or, in a Parquet, the row number (from 1).
``model_name`` is the caller's or the file's stem; ``model_version`` is "unknown"; the true labels are null
(``--labels`` brings them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from faceattr_batch.data.labels import (
    GENDERS,
    IMAGE_EXTENSIONS,
    MAX_AGE,
    OTHER_RACES,
    RACES,
    age_bin_ends,
    gender_code,
    other_race_code,
    race_words,
)
from faceattr_batch.data.score_vectors import element_class, expand_score_vectors
from faceattr_batch.data.tables import LINE, PROBLEM_SCHEMA, as_text, codes, read_csv
from faceattr_batch.errors import FaceattrError, first_line, require_file
from faceattr_batch.schema import PREDICTION_FIELDS, RACE_PROB_COLUMNS, derived_columns

# ours <- what other tools write; lower case, tried in this order
COLUMN_SPELLINGS: dict[str, tuple[str, ...]] = {
    "path": (
        "path",
        "file",
        "filename",
        "file_name",
        "image",
        "img",
        "image_path",
        "img_path",
        "identity",
        "face_name_align",
    ),  # the last: FairFace's classifier (its predict.py)
    "gender": ("dominant_gender", "pred_gender", "predicted_gender", "gender", "sex"),
    "p_female": ("p_female", "gender.woman", "woman", "gender_scores_fair[female]"),
    "p_male": ("p_male", "gender.man", "man"),
    "race": ("dominant_race", "pred_race", "predicted_race", "race", "ethnicity"),
    "age": ("pred_age", "predicted_age", "apparent_age", "age"),
}
ATTRIBUTES = ("gender", "race", "age")
GENDER_WORDS = {"man": "male", "woman": "female"}  # deepface's dominant_gender
GENDER_ONE_IS = ("female", "male")
# columns only predict writes together: a Parquet with them all is ours (reporting.summary.read_predictions)
OWN_COLUMNS = ("path", "error", "model_name", "model_version")
PROBLEM_LINES_SHOWN = 5
PROBLEM_REASONS_SHOWN = 3  # per column, the most frequent first (a reason may quote its value: many distinct)
WHOLE_ROW = "(row)"  # the summary's key for problems of a whole row (wrong field count)
NO_PREDICTION = "no prediction: every predicted value empty or unreadable"
RACE_PROB_PREFIXES = ("race.", "race_", "p_")
# a probability group whose largest value is above this is in percent: a float32 1.0000001 is not (every value of
# the group divided by 100 would flip its predictions), and no percent group tops out this low (P(female) and
# P(male) together, or the race classes together, reach 50 somewhere)
PERCENT_ABOVE = 1.5
ROUNDING = 1e-6  # a probability this far over its scale is the scale (float rounding), not a problem


@dataclass(frozen=True)
class ReadingNotes:
    """How the values were read, where a table could mean two things: a report names these beside its figures."""

    percent: tuple[str, ...] = ()  # the file's probability columns read in percent (divided by 100)
    gender_numeric: bool = False  # the gender column holds numbers (then gender_one_is says what 1 is)


@dataclass(frozen=True)
class ForeignPredictions:
    """A foreign table as read: ``frame`` in the predictions schema, the values it could not read (``problems``:
    line, column as the file names it, value, reason) and what each of our columns was read from."""

    path: Path
    format: str  # csv | parquet
    frame: pl.DataFrame  # PREDICTION_FIELDS, in their order
    problems: pl.DataFrame  # PROBLEM_SCHEMA, by line
    columns: dict[str, str]  # ours -> the file's ("p_others": "race.middle eastern + race.latino hispanic")
    attributes: tuple[str, ...]  # of ATTRIBUTES, those the table predicts
    rows: int  # data rows in the file, unread ones included
    gender_one_is: str
    notes: ReadingNotes = ReadingNotes()

    @property
    def summary(self) -> dict:
        """What a report shows: the columns read, the conventions applied, problems counted per column with the
        first few lines and the most frequent reasons."""
        problems = self.problems.with_columns(pl.col("column").fill_null(WHOLE_ROW))
        reasons = (
            problems.group_by("column", "reason").len()
            .sort("len", "reason", descending=[True, False])
            .group_by("column", maintain_order=True)
            .agg(pl.struct("reason", "len").head(PROBLEM_REASONS_SHOWN).alias("reasons"))
        )  # fmt: skip
        per_column = (
            problems.group_by("column", maintain_order=True)
            .agg(count=pl.len(), lines=pl.col("line").head(PROBLEM_LINES_SHOWN))
            .join(reasons, on="column", how="left")
            .sort(pl.col("column") == WHOLE_ROW, "column")
        )
        return {
            "file": str(self.path),
            "format": self.format,
            "rows": self.rows,
            "columns": dict(self.columns),
            "attributes": list(self.attributes),
            "gender_one_is": self.gender_one_is,
            "percent": list(self.notes.percent),
            "gender_numeric": self.notes.gender_numeric,
            "race_mapping": dict(OTHER_RACES) if "race" in self.columns else None,
            "problem_count": self.problems.height,
            "problems_by_column": {
                column: {"count": n, "lines": lines, "reasons": {r["reason"]: r["len"] for r in top}}
                for column, n, lines, top in per_column.iter_rows()
            },
        }


def is_own_predictions(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Parquet with ``OWN_COLUMNS`` (``predict``'s, read by ``read_predictions``, which names
    any column an older version lacks); anything else, a missing file included, is for
    ``read_foreign_predictions``."""
    try:
        with open(path, "rb") as file:
            if file.read(4) != b"PAR1":
                return False
        names = pl.read_parquet_schema(path)
    except Exception:  # unreadable: the foreign reader says why
        return False
    return set(OWN_COLUMNS) <= set(names)


def parse_columns(spec: str) -> dict[str, str | None]:
    """``--columns`` -> the ``columns`` mapping of ``read_foreign_predictions``: comma-separated ``ours=theirs``
    (``path=img,gender=sex,age=apparent_age``); nothing after ``=`` leaves that attribute out (``race=``). A key
    not among ``COLUMN_SPELLINGS``', a part without ``=`` or a key given twice is refused in one line."""
    mapping: dict[str, str | None] = {}
    for part in (part.strip() for part in spec.split(",")):
        ours, sep, theirs = part.partition("=")
        ours = ours.strip().lower()
        if not sep or not ours:
            raise FaceattrError(f"--columns {spec!r}: {part!r} is not ours=theirs (e.g. path=img,gender=sex,race=)")
        if ours not in COLUMN_SPELLINGS:
            raise FaceattrError(f"--columns {spec!r}: unknown key {ours!r} (keys: {', '.join(COLUMN_SPELLINGS)})")
        if ours in mapping:
            raise FaceattrError(f"--columns {spec!r}: {ours} given twice")
        if ours == "path" and not theirs.strip():
            raise FaceattrError(f"--columns {spec!r}: path names the images' column; it cannot be left out")
        mapping[ours] = theirs.strip() or None
    return mapping


def read_foreign_predictions(
    path: str | os.PathLike,
    columns: Mapping[str, str | None] | None = None,
    *,
    gender_one_is: str = "female",
    model_name: str | None = None,
) -> ForeignPredictions:
    """Another tool's predictions table -> ``ForeignPredictions`` (see the module doc). ``columns`` maps any of
    ``COLUMN_SPELLINGS``' keys to the file's column (``None``: leave that attribute out); ``gender_one_is``:
    what a gender of 1 means, "female" (ours) or "male" (insightface)."""
    path = Path(path)
    if gender_one_is not in GENDER_ONE_IS:
        raise FaceattrError(f"--gender-one-is {gender_one_is!r}: use {' or '.join(GENDER_ONE_IS)}")
    require_file(path, "", "predictions file")
    if path.suffix.lower() in IMAGE_EXTENSIONS:  # else "not UTF-8 text (byte 0)"
        raise FaceattrError(f"{path}: an image; give a predictions table (predict's Parquet, another tool's table)")
    fmt, raw, problems = _read_table(path)
    rows = raw.height + sum(p.height for p in problems)  # the rows not read are the problems so far
    raw, vector_problems = expand_score_vectors(raw)
    problems += vector_problems
    found = _find_columns(path, raw, dict(columns or {}))
    paths = as_text(raw[found["path"]])
    no_path = pl.lit("no path: row not read")
    problems.append(
        raw.filter(paths.is_null()).select(
            line=LINE, column=pl.lit(found["path"]), value=pl.lit(None, pl.String), reason=no_path
        )
    )
    raw, paths = raw.filter(paths.is_not_null()), paths.drop_nulls()
    values, read_problems, notes = _predicted_values(raw, found, gender_one_is)
    problems += read_problems
    frame = _to_schema(pl.DataFrame({"path": paths, **values}), model_name or path.stem)
    problems_frame = pl.concat([pl.DataFrame(schema=PROBLEM_SCHEMA), *problems]).sort("line", "column")
    attributes = tuple(a for a in ATTRIBUTES if f"pred_{a}" in values)
    return ForeignPredictions(path, fmt, frame, problems_frame, _sources(found), attributes, rows, gender_one_is, notes)


# --- reading ----------------------------------------------------------------------------------------------------


def _read_table(path: Path) -> tuple[str, pl.DataFrame, list[pl.DataFrame]]:
    """The format, the rows (every column as the file has it, plus ``LINE``) and the rows not read."""
    with open(path, "rb") as file:
        parquet = file.read(4) == b"PAR1"
    if parquet:
        try:
            frame = pl.read_parquet(path)
        except Exception as err:  # polars raises several types for a corrupt file
            raise FaceattrError(f"{path}: not a readable Parquet file ({first_line(err, 160)})") from None
        return "parquet", frame.with_row_index(LINE, offset=1).cast({LINE: pl.Int64}), []
    frame, problems = read_csv(path, str(path))
    return "csv", frame, [problems]


def _find_columns(path: Path, raw: pl.DataFrame, given: dict[str, str | None]) -> dict[str, str | list[str]]:
    """Ours -> the file's column: the caller's, else the first spelling present; ``race_probs`` -> per class of
    ours, the file's probability columns. Raises naming what was found and what is accepted."""
    unknown = sorted(set(given) - set(COLUMN_SPELLINGS))
    if unknown:
        raise FaceattrError(f"columns: unknown key {unknown[0]!r} (keys: {', '.join(COLUMN_SPELLINGS)})")
    names = [c for c in raw.columns if c != LINE and not raw.schema[c].is_nested()]
    lowered = {}
    for name in names:
        lowered.setdefault(name.lower(), name)
    shown = ", ".join(c for c in raw.columns if c != LINE and element_class(c) is None) or "none"
    found: dict[str, str | list[str]] = {}
    for ours, spellings in COLUMN_SPELLINGS.items():
        if ours in given and given[ours] is None:
            continue
        if ours in given:
            name = given[ours] if given[ours] in names else lowered.get(given[ours].lower())
            if name is None:
                raise FaceattrError(f"{path}: no column {given[ours]!r} (given for {ours}; columns: {shown})")
        else:
            name = next((lowered[s] for s in spellings if s in lowered), None)
        if name is not None:  # P(male) beside P(female) sets their scale with it (percent or not), nothing else
            found[ours] = name
    if "path" not in found:
        accepted = ", ".join(COLUMN_SPELLINGS["path"])
        raise FaceattrError(f"{path}: no column names the images (columns: {shown}; accepted: {accepted})")
    if given.get("race", "") is not None:
        found |= {ours: sources for ours, sources in _race_prob_columns(names).items() if sources}
    if not any(key in found for key in ("gender", "p_female", "p_male", "race", "age", *RACE_PROB_COLUMNS)):
        accepted = "; ".join(f"{a}: {', '.join(COLUMN_SPELLINGS[a])}" for a in ATTRIBUTES)
        raise FaceattrError(f"{path}: no predicted gender, race or age column (columns: {shown}; accepted: {accepted})")
    return found


def _race_prob_columns(names: list[str]) -> dict[str, list[str]]:
    """``p_white`` ... ``p_others`` -> the columns holding a probability of a class mapped to it."""
    ours = {race.lower(): race for race in RACES} | OTHER_RACES
    found: dict[str, list[str]] = {column: [] for column in RACE_PROB_COLUMNS}
    for name in names:
        lowered = name.lower()
        prefix = next((p for p in RACE_PROB_PREFIXES if lowered.startswith(p)), None)
        race_class = element_class(name) or (lowered[len(prefix) :] if prefix else None)
        race = ours.get(race_words(race_class)) if race_class else None
        if race is not None:
            found[f"p_{race.lower()}"].append(name)
    return found


def _sources(found: dict[str, str | list[str]]) -> dict[str, str]:
    return {ours: name if isinstance(name, str) else " + ".join(name) for ours, name in found.items()}


# --- values -----------------------------------------------------------------------------------------------------


def _predicted_values(
    raw: pl.DataFrame, found: dict, gender_one_is: str
) -> tuple[dict[str, pl.Series], list[pl.DataFrame], ReadingNotes]:
    """The prediction columns of ours the table has, the problems met reading them and how they were read."""
    lines, problems, values = raw[LINE], [], {}
    probability, percent, gender_numeric = {}, (), False
    gender_probs = [found[k] for k in ("p_female", "p_male") if k in found]
    race_probs = [name for ours in RACE_PROB_COLUMNS for name in found.get(ours, [])]
    for group in (gender_probs, race_probs):
        read, group_problems, in_percent = _probabilities(raw, group)
        probability |= read
        problems += group_problems
        percent += tuple(group) if in_percent else ()
    if gender_probs:
        p = probability[gender_probs[0]]
        values["p_female"] = p if "p_female" in found else 1 - p
    if "gender" in found:
        gender = as_text(raw[found["gender"]])
        gender_numeric = bool(gender.str.contains(r"^\s*\d").any())
        values["pred_gender"], bad = codes(gender, lines, found["gender"], _gender_reader(gender_one_is))
        problems.append(bad)
    elif gender_probs:
        values["pred_gender"] = (values["p_female"] >= 0.5).cast(pl.Int8)
    race_sums = [ours for ours in RACE_PROB_COLUMNS if ours in found]
    sums = {ours: _summed([probability[name] for name in found[ours]]) for ours in race_sums}
    if sums:
        values |= pl.select(**sums).to_dict()
    if "race" in found:
        values["pred_race"], bad = codes(as_text(raw[found["race"]]), lines, found["race"], other_race_code)
        problems.append(bad)
    elif len(sums) == len(RACE_PROB_COLUMNS):  # from all five or none: a class not read may have been the largest
        every = pl.all_horizontal(values[ours].is_not_null() for ours in race_sums)
        values["pred_race"] = pl.select(pl.when(every).then(pl.concat_list(list(sums.values())).list.arg_max()))
        values["pred_race"] = values["pred_race"].to_series()
    if "age" in found:
        ages, bad = _ages(raw[found["age"]], lines, found["age"])
        values |= ages
        problems.append(bad)
    values = {name: series.alias(name) for name, series in values.items()}
    return values, problems, ReadingNotes(percent, gender_numeric)


def _summed(columns: list[pl.Series]) -> pl.Expr:
    """The sum of a class's probability columns, null where none was read (``sum_horizontal`` alone gives 0: a
    row without race probabilities was predicted White)."""
    return pl.when(pl.any_horizontal(c.is_not_null() for c in columns)).then(pl.sum_horizontal(columns))


def _probabilities(raw: pl.DataFrame, names: list[str]) -> tuple[dict[str, pl.Series], list[pl.DataFrame], bool]:
    """Probability columns read together: in percent (all divided by 100) when the largest value is above
    ``PERCENT_ABOVE``; a value outside 0..1 after that (beyond float rounding) is a problem. The bool: in percent."""
    read = {name: _numbers(raw[name]) for name in names}
    largest = max((numbers.max() or 0.0 for numbers, _ in read.values()), default=0.0)
    scale = 100.0 if largest > PERCENT_ABOVE else 1.0
    reason = (
        pl.when(pl.col("text").is_null()).then(None)
        .when(pl.col("number").is_null()).then(pl.lit("not a number"))
        .when((pl.col("number") < 0) | (pl.col("number") > scale * (1 + ROUNDING)))
        .then(pl.lit(f"not a probability (0..{scale:g})"))
    )  # fmt: skip
    values, problems = {}, []
    for name, (numbers, text) in read.items():
        checked, bad = _checked(numbers, text, raw[LINE], name, reason)
        values[name] = checked.clip(upper_bound=scale) / scale
        problems.append(bad)
    return values, problems, scale == 100.0


def _numbers(series: pl.Series) -> tuple[pl.Series, pl.Series]:
    """A column as finite floats (null where unreadable) and as text (for the problems)."""
    text = as_text(series)
    numbers = series.cast(pl.Float64) if series.dtype.is_numeric() else text.cast(pl.Float64, strict=False)
    numbers = pl.select(pl.when(numbers.is_finite()).then(numbers)).to_series()
    return numbers, text


def _ages(column: pl.Series, lines: pl.Series, name: str) -> tuple[dict[str, pl.Series], pl.DataFrame]:
    """An age column -> ``pred_age`` (years) and, for an age bin (FairFace's classifier writes "20-29", "more than
    70"), ``pred_age_low`` / ``pred_age_high`` with ``pred_age`` null; and the values not read, as problems."""
    number, text = _numbers(column)
    low, high = age_bin_ends(pl.col("text"))
    is_bin = pl.col("number").is_null() & low.is_not_null()
    reason = (
        pl.when(pl.col("text").is_null()).then(None)
        .when(is_bin & ((low > high) | (high > MAX_AGE))).then(pl.lit(f"an age bin outside 0..{MAX_AGE}"))
        .when(is_bin).then(None)
        .when(pl.col("number").is_null()).then(pl.lit("not a number of years (nor an age bin such as 20-29)"))
        .when(pl.col("number") < 0).then(pl.lit("negative age"))
        .when(pl.col("number") > MAX_AGE).then(pl.lit(f"age above {MAX_AGE}"))
    )  # fmt: skip
    table = pl.DataFrame({"line": lines, "number": number, "text": text}).with_columns(reason=reason)
    ok = pl.col("reason").is_null()
    ages = table.select(
        pred_age=pl.when(ok).then("number"),
        pred_age_low=pl.when(ok & is_bin).then(low),
        pred_age_high=pl.when(ok & is_bin).then(high),
    )
    problems = table.filter(~ok).select("line", column=pl.lit(name), value="text", reason="reason")
    return ages.to_dict(), problems


def _checked(
    numbers: pl.Series, text: pl.Series, lines: pl.Series, column: str, reason: pl.Expr
) -> tuple[pl.Series, pl.DataFrame]:
    """``numbers`` nulled where ``reason`` (over ``number`` and ``text``) gives one; those rows as problems."""
    table = pl.DataFrame({"line": lines, "number": numbers, "text": text}).with_columns(reason=reason)
    bad = table.filter(pl.col("reason").is_not_null())
    kept = table.select(pl.when(pl.col("reason").is_null()).then("number")).to_series()
    return kept, bad.select("line", column=pl.lit(column), value="text", reason="reason")


def _gender_reader(one_is: str) -> Callable[[str], int]:
    def read(value: str) -> int:
        text = value.strip().lower()
        try:
            code = gender_code(GENDER_WORDS.get(text, text))
        except ValueError:
            raise ValueError(f"{value!r} is not one of {', '.join(GENDERS)}, m, f, man, woman, 0, 1") from None
        # a number (1, 1.0: a CSV column with a gap, as pandas writes it) is the tool's convention; a word is not
        return 1 - code if one_is == "male" and text[:1].isdigit() else code

    return read


def _to_schema(values: pl.DataFrame, model_name: str) -> pl.DataFrame:
    """The read columns -> every ``PREDICTION_FIELDS`` column in its dtype: absent ones null, the error where a
    row has no prediction, face_index by path, the labels by ``derived_columns``."""
    predicted = [c for c in values.columns if c != "path"]
    no_prediction = pl.all_horizontal(pl.col(c).is_null() for c in predicted)
    frame = values.with_columns(
        error=pl.when(no_prediction).then(pl.lit(NO_PREDICTION)),
        face_index=pl.int_range(pl.len()).over("path"),
        model_name=pl.lit(model_name),
        model_version=pl.lit("unknown"),
    )
    frame = frame.select(
        pl.col(c).cast(dtype) if c in frame.columns else pl.lit(None, dtype).alias(c)
        for c, dtype in PREDICTION_FIELDS.items()
    )
    return frame.with_columns(derived_columns())
