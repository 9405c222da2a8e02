"""Label files -> true labels for a list of inputs: what ``--labels FILE`` reads (``predict`` and ``report``).

Formats, told from the content: an index Parquet written by ``index`` (its paths under its recorded root, its
codes); CelebA's ``list_attr_celeba.txt`` (a count line, the attribute names, then an image id and a 1/-1 per
attribute: ``Male`` is the gender, 1 male = code 0, -1 female = code 1, the others boolean columns); FairFace's
label CSVs (file, age, gender, race[, service_test]; other columns too where the first age is a bin: the age bin,
"20-29" or "more than 70", kept as ``true_age_low``/``true_age_high`` with ``true_age`` null; the seven races kept
as ``fairface_race`` and mapped to our five by ``FAIRFACE_RACE_MAP``); any other CSV (comma, tab or semicolon),
Parquet or JSON Lines table keyed by a ``path`` or ``file`` column, with any of ``age`` (years, rounded halves up;
or a bin), ``gender`` (0/1, male/female/m/f), ``race`` (0-4 or ``data.labels.RACES``), in any case. Other columns
are kept (extras). A value that cannot be read is a problem (the line an editor shows, header counted; a Parquet's
row number) and that label stays null.

Matching: an absolute path names that file (a symlinked folder matches its target); a relative path or a file
name matches the input whose path ends with it at a folder boundary (``train/1.jpg`` matches
``/data/train/1.jpg``, ``1.jpg`` not ``x11.jpg``); one that ends two inputs' paths is an error naming them. An
input named by two rows keeps the first; the other is a problem.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from faceattr_batch.data.image_quality import QUALITY_COLUMNS
from faceattr_batch.data.inputs import INDEX_ROOT_KEY, display_path, index_paths
from faceattr_batch.data.labels import (
    AGE_BIN_CLOSED,
    AGE_BINS_OPEN,
    FAIRFACE_RACES,
    MAX_AGE,
    OTHER_RACES,
    age_bin_ends,
    gender_code,
    other_race_code,
    race_code,
    race_words,
)
from faceattr_batch.data.tables import LINE, as_text, codes, delimiter, problem_frame, read_csv, read_text
from faceattr_batch.errors import FaceattrError, first_line, require_file
from faceattr_batch.io.digest import file_sha256
from faceattr_batch.schema import LABEL_COLUMNS, LABEL_FIELDS, OUTPUT_COLUMNS, derived_columns

# FairFace's seven races -> ours (data.labels.RACES); the summaries and metrics.json state it
FAIRFACE_RACE_MAP: dict[str, str] = {name: OTHER_RACES[race_words(name)] for name in FAIRFACE_RACES}
FAIRFACE_COLUMNS = ("file", "age", "gender", "race")
WINDOWS_SEPARATOR = re.compile(r"\\(?!x[0-9a-f]{2})")  # a backslash that is not display_path's \xNN
KEY_COLUMNS = ("path", "file")
PROBLEMS_KEPT = 20  # in the summary (and so metrics.json); the total beside them
# an extra column of one of these names would shadow a predictions column: it is kept as label_<name>
RESERVED = {*OUTPUT_COLUMNS, "key", "line", "pos"}  # key, line, pos: this module's own


@dataclass(frozen=True)
class LabelTable:
    """A label file as read: one row per label row (``key`` as written, ``line``, the ``LABEL_COLUMNS`` codes,
    the age bin, the extras) and the values it could not read."""

    path: Path
    format: str  # index | celeba | fairface | csv | parquet | jsonl
    key: str  # the column the rows are keyed by: path | file
    frame: pl.DataFrame
    extras: tuple[str, ...]
    problems: pl.DataFrame  # PROBLEM_SCHEMA, by line
    rows: int  # data rows in the file, unreadable ones included


@dataclass(frozen=True)
class MatchedLabels:
    """A label file matched to inputs: ``frame`` has one row per input, in their order (``path`` as the
    predictions write it, the codes, the age bin, the extras); ``summary`` is what the summaries print."""

    source: str  # the resume fingerprint's label source: the format, the file and its digest
    frame: pl.DataFrame
    summary: dict


def load_labels(path: str | os.PathLike, inputs: Sequence[str]) -> MatchedLabels:
    """``read_label_file`` then ``match_labels``."""
    return match_labels(read_label_file(path), inputs)


def attach_labels(predictions: pl.DataFrame, labels: MatchedLabels) -> pl.DataFrame:
    """``predictions`` with the labels file's ``LABEL_COLUMNS`` (replacing theirs) and extra columns, joined by
    ``path``; the readable true labels recomputed. The faces of a photo with several get no labels (a label
    describes one person), only the photo's extra columns."""
    added = [c for c in labels.frame.columns if c != "path"]
    joined = predictions.drop([c for c in added if c in predictions.columns]).join(
        labels.frame, on="path", how="left", maintain_order="left"
    )
    one_face = pl.len().over("path") == 1
    joined = joined.with_columns(pl.when(one_face).then(pl.col(c)).alias(c) for c in LABEL_COLUMNS)
    derived = [expr for expr in derived_columns() if expr.meta.output_name() in predictions.columns]
    return joined.with_columns(derived).select(
        *predictions.columns, *(c for c in added if c not in predictions.columns)
    )


# --- reading ----------------------------------------------------------------------------------------------------


def _read_labels_csv(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return read_csv(path, f"--labels {path}")


def read_label_file(path: str | os.PathLike) -> LabelTable:
    """The rows and problems of a label file of any format above (told from its content)."""
    path = Path(path)
    require_file(path, "--labels", "labels file")
    fmt = detect_format(path)
    readers = {"index": functools.partial(_read_parquet, index=True), "parquet": _read_parquet}
    raw, problems = (readers | {"celeba": _read_celeba, "jsonl": _read_jsonl}).get(fmt, _read_labels_csv)(path)
    return _labels(path, fmt, raw, problems)


def detect_format(path: Path) -> str:
    """index | parquet | celeba | jsonl | fairface | csv, from the first bytes; unknown content is an error."""
    with open(path, "rb") as file:
        head = file.read(1 << 16)
    if head.startswith(b"PAR1"):
        try:
            return "index" if INDEX_ROOT_KEY in pl.read_parquet_metadata(path) else "parquet"
        except Exception:  # polars raises several types for a corrupt file; the Parquet reader says which
            return "parquet"
    unknown = FaceattrError(
        f"--labels {path}: not a labels file this tool reads (CSV, Parquet, JSON Lines, an index Parquet, "
        "CelebA list_attr_celeba.txt, a FairFace labels CSV)"
    )
    if b"\0" in head:
        raise unknown
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not a character cut at the end of the block
            raise FaceattrError(f"--labels {path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
        text = head[: err.start].decode("utf-8-sig")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        raise FaceattrError(f"--labels {path}: an empty file")
    if lines[0].isdigit() and len(lines) > 1 and "," not in lines[1]:
        return "celeba"
    if lines[0].startswith("{"):
        return "jsonl"
    if lines[0].startswith("["):
        # a first line that is an array of its own, objects after it: JSON Lines with a bad line, not one array
        if len(lines) > 1 and lines[1].startswith("{") and _is_json(lines[0]):
            return "jsonl"
        raise FaceattrError(f"--labels {path}: a JSON array; write JSON Lines (one object a line) instead")
    rows = list(csv.reader(lines[:2], delimiter=delimiter(lines[0])))
    header = [name.strip().lower() for name in rows[0]]
    if not set(FAIRFACE_COLUMNS) <= set(header):
        return "csv"
    # FairFace names its races ("East Asian") and bins its ages ("20-29"): a table of these columns holding race codes
    # or ages in years is a plain CSV, and one with columns of its own (a skin tone, pandas' index) is FairFace's only
    # where its ages are FairFace's bins
    first = rows[1] if len(rows) > 1 and len(rows[1]) == len(header) else None
    if first is not None and any(first[header.index(name)].strip().isdigit() for name in ("race", "age")):
        return "csv"
    if set(header) <= {*FAIRFACE_COLUMNS, "service_test"}:
        return "fairface"
    return "fairface" if first is not None and _is_age_bin(first[header.index("age")]) else "csv"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _is_age_bin(text: str) -> bool:
    """Whether ``text`` is an age bin ("20-29", "more than 70", "70+"), not a number of years."""
    return any(re.match(pattern, text.strip()) for pattern in (AGE_BIN_CLOSED, *AGE_BINS_OPEN))


def _read_parquet(path: Path, index: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A Parquet table, its rows numbered from 1; an index's codes (and duplicate groups, with ``--hash``; quality
    measures, with ``--quality``: columns to slice by) beside its absolute paths."""
    try:
        columns = None
        if index:  # the rest of an index is about the files, not labels
            kept = ("dup_group", *QUALITY_COLUMNS)
            columns = ["age", "gender", "race", *(name for name in pl.read_parquet_schema(path) if name in kept)]
        frame = pl.read_parquet(path, columns=columns)
    except Exception as err:  # polars raises several types for a corrupt file
        raise FaceattrError(f"--labels {path}: not a readable Parquet file ({first_line(err)})") from None
    if index:
        frame = frame.with_columns(path=pl.Series([display_path(p) for p in index_paths(path)], dtype=pl.String))
    return frame.with_row_index(LINE, offset=1).cast({LINE: pl.Int64}), problem_frame([])


def _read_jsonl(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    records, lines, bad = [], [], []
    for number, line in enumerate(read_text(path, f"--labels {path}").split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}")
        except ValueError as err:
            bad.append((number, None, None, f"not a JSON object ({first_line(err, 80)}): row not read"))
            continue
        records.append(record)
        lines.append(number)
    names = dict.fromkeys(name for record in records for name in record)
    frame = pl.DataFrame(
        {name: pl.Series([_json_text(r.get(name)) for r in records], dtype=pl.String) for name in names}
    )
    return frame.with_columns(pl.Series(LINE, lines, dtype=pl.Int64)), problem_frame(bad)


def _key(text: str) -> str:
    """A key as matched: normalised, Windows' separators read as ``/`` where it has no ``/`` (a ``\\xNN`` is
    ``display_path``'s escape of a byte, not a separator); one that climbs out (``../faces/a.jpg``) can end no input's
    path, so it is taken from the working folder, as a shell would."""
    if "/" not in text:  # train\1.jpg, written on Windows, is train/1.jpg here
        text = WINDOWS_SEPARATOR.sub("/", text)
    key = os.path.normpath(text)
    return os.path.abspath(key) if key == ".." or key.startswith("../") else key


def _json_text(value) -> str | None:
    if isinstance(value, bool | list | dict):
        return json.dumps(value)  # true/false, nested values as JSON
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if value is None or isinstance(value, str) else str(value)


def _read_celeba(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """list_attr_celeba.txt: every attribute 1/-1 -> a boolean column; ``Male`` -> the gender (as its code)."""
    lines = read_text(path, f"--labels {path}").split("\n")
    names = lines[1].split()
    numbers, rows, bad = [], [], []
    for number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == len(names) + 1:
            numbers.append(number)
            rows.append(fields)
        else:
            reason = f"{len(fields) - 1} values where the header names {len(names)}: row not read"
            bad.append((number, None, fields[0], reason))
    count, listed = lines[0].strip(), len(rows) + len(bad)
    if count != str(listed):
        bad.append((1, None, count, f"the count line says {count}; the file lists {listed}"))
    raw = pl.DataFrame(rows, schema={"file": pl.String, **dict.fromkeys(names, pl.String)}, orient="row")
    raw = raw.with_columns(pl.Series(LINE, numbers, dtype=pl.Int64))
    for name in names:
        flags = pl.col(name).replace_strict({"1": True, "-1": False}, default=None, return_dtype=pl.Boolean)
        wrong = raw.filter(flags.is_null()).select(LINE, pl.lit(name).alias("c"), name, pl.lit("not 1 or -1"))
        bad += wrong.rows()
        raw = raw.with_columns(flags.alias(name))
    if "Male" in names:
        raw = raw.with_columns(gender=pl.col("Male").replace_strict({True: "0", False: "1"}, default=None))
        raw = raw.drop("Male")
    return raw, problem_frame(bad)


# --- values -----------------------------------------------------------------------------------------------------


def _labels(path: Path, fmt: str, raw: pl.DataFrame, problems: pl.DataFrame) -> LabelTable:
    """Raw rows -> key, line, codes, age bin, extras; unreadable values -> problems, their labels null."""
    known = [c for c in raw.columns if c.lower() in (*KEY_COLUMNS, "age", "gender", "race")]
    for name in dict.fromkeys(c.lower() for c in known):
        spellings = [c for c in known if c.lower() == name]
        if len(spellings) > 1:
            raise FaceattrError(f"--labels {path}: columns {', '.join(spellings)} are all '{name}' here: keep one")
    raw = raw.rename({c: c.lower() for c in known})
    key = next((c for c in KEY_COLUMNS if c in raw.columns), None)
    if key is None:
        shown = ", ".join(c for c in raw.columns if c != LINE)
        raise FaceattrError(f"--labels {path}: no 'path' or 'file' column (columns: {shown or 'none'})")
    rows = raw.height + problems.filter(pl.col("reason").str.ends_with("row not read")).height
    keys = as_text(raw[key])
    no_key = pl.lit(f"no {key}: row not read")
    found = [
        raw.filter(keys.is_null()).select(line=LINE, column=pl.lit(key), value=pl.lit(None, pl.String), reason=no_key)
    ]
    raw = raw.filter(keys.is_not_null())
    columns = {"key": pl.Series([_key(k) for k in keys.drop_nulls()], dtype=pl.String), "line": raw[LINE]}
    if "age" in raw.columns:
        ages, age_problems = _ages(as_text(raw["age"]), raw[LINE])
        columns |= ages
        found.append(age_problems)
    for name, code_of in (("gender", gender_code), ("race", other_race_code if fmt == "fairface" else race_code)):
        if name in raw.columns:
            columns[f"true_{name}"], name_problems = codes(as_text(raw[name]), raw[LINE], name, code_of)
            found.append(name_problems)
    if fmt == "fairface" and "race" in raw.columns:
        columns["fairface_race"] = as_text(raw["race"])
    others = [c for c in raw.columns if c not in (*KEY_COLUMNS, "age", "gender", "race", LINE)]
    extras = {(f"label_{c}" if c in RESERVED else c): _typed(raw[c]) for c in others}
    frame = pl.DataFrame(columns | extras).with_columns(
        pl.col(c).cast(dtype) if c in columns else pl.lit(None, dtype).alias(c) for c, dtype in LABEL_FIELDS.items()
    )
    problems = pl.concat([problems, *found]).sort("line", "column", nulls_last=True)
    kept = tuple(c for c in frame.columns if c not in ("key", "line", *LABEL_FIELDS))
    return LabelTable(path, fmt, key, frame, kept, problems, rows)


def _ages(text: pl.Series, lines: pl.Series) -> tuple[dict[str, pl.Series], pl.DataFrame]:
    """Years (rounded) -> ``true_age``; a bin ("20-29", "more than 70", "70+") -> ``true_age_low``/``_high``."""
    value = pl.col("value")
    number = value.cast(pl.Float64, strict=False)
    years = (number + 0.5).floor()  # halves up, as a predicted age is rounded (polars' round: half to even)
    low, high = age_bin_ends(value)
    reason = (
        pl.when(value.is_null()).then(None)
        .when(number.is_not_null() & ~number.is_finite()).then(pl.lit("not a number of years"))
        .when(number < 0).then(pl.lit("negative age"))
        .when(years > MAX_AGE).then(pl.lit(f"age above {MAX_AGE}"))
        .when(number.is_not_null()).then(None)
        .when(low.is_null()).then(pl.lit("not a number of years (nor an age bin such as 20-29)"))
        .when((low > high) | (high > MAX_AGE)).then(pl.lit(f"an age bin outside 0..{MAX_AGE}"))
    )  # fmt: skip
    parsed = pl.DataFrame({"line": lines, "value": text}).with_columns(
        reason=reason, age=years.cast(pl.Int64, strict=False), low=low, high=high
    )
    ok = pl.col("reason").is_null()
    ages = parsed.select(
        true_age=pl.when(ok).then("age"),
        true_age_low=pl.when(ok & pl.col("age").is_null()).then("low"),
        true_age_high=pl.when(ok & pl.col("age").is_null()).then("high"),
    )
    problems = parsed.filter(~ok).select("line", pl.lit("age").alias("column"), "value", "reason")
    return ages.to_dict(), problems


def _typed(series: pl.Series) -> pl.Series:
    """A text column as integers, floats or booleans when every value reads as one; else as it is."""
    if series.dtype != pl.String:
        return series
    text = as_text(series)
    present = text.is_not_null().sum()
    for typed in (
        text.str.to_integer(strict=False),
        text.cast(pl.Float64, strict=False),
        text.str.to_lowercase().replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean),
    ):
        if present and typed.is_not_null().sum() == present:
            return typed.alias(series.name)
    return series


# --- matching ---------------------------------------------------------------------------------------------------


def match_labels(table: LabelTable, inputs: Sequence[str]) -> MatchedLabels:
    """``table``'s rows matched to ``inputs`` (see the module doc): one row per input, and the counts."""
    shown = pl.Series("path", [display_path(p) for p in inputs], dtype=pl.String)
    positions = pl.Series("pos", range(len(inputs)), dtype=pl.Int64)
    labels = table.frame
    absolute = labels["key"].str.starts_with("/")
    pairs = [pl.DataFrame(schema={"line": pl.Int64, "pos": pl.Int64})]
    if absolute.any():
        given = labels.filter(absolute).select("line", real=pl.Series(_real_paths(labels.filter(absolute)["key"])))
        real_inputs = [display_path(p) for p in _real_paths(inputs)]  # as text, as the keys are
        wanted = pl.DataFrame({"real": pl.Series(real_inputs, dtype=pl.String), "pos": positions})
        pairs.append(given.join(wanted, on="real").select("line", "pos"))
    relative = labels.filter(~absolute).select("line", "key", depth=pl.col("key").str.count_matches("/") + 1)
    for depth in relative["depth"].unique().to_list():
        ends = pl.DataFrame({"key": shown.str.split("/").list.slice(-depth).list.join("/"), "pos": positions})
        found = relative.filter(pl.col("depth") == depth).join(ends, on="key")
        _refuse_ambiguous(found, shown, table.path)
        pairs.append(found.select("line", "pos"))
    pairs = pl.concat(pairs).unique().sort("line", "pos")
    kept = pairs.unique("pos", keep="first", maintain_order=True)
    again = pairs.join(kept, on="pos", suffix="_kept").filter(pl.col("line") != pl.col("line_kept"))
    repeats = again.join(labels.select("line", "key"), on="line").select(
        "line", column=pl.lit(table.key), value="key",
        reason=pl.format("names the same image as line {} (that line is used)", "line_kept"),
    )  # fmt: skip
    problems = pl.concat([table.problems, repeats]).unique(maintain_order=True).sort("line", "column")
    frame = (
        pl.DataFrame([shown, positions])
        .join(kept, on="pos", how="left", maintain_order="left")
        .join(labels.drop("key"), on="line", how="left", maintain_order="left")
        .drop("pos", "line")
    )
    summary = {
        "file": str(table.path), "format": table.format, "key": table.key, "rows": table.rows,
        "matched_inputs": kept.height, "inputs_without_labels": len(inputs) - kept.height,
        "labels_not_in_inputs": labels.height - pairs["line"].n_unique(),
        "extra_columns": list(table.extras),
        "problem_count": problems.height, "problems": problems.head(PROBLEMS_KEPT).to_dicts(),
    }  # fmt: skip
    if table.format == "fairface":
        summary["race_mapping"] = dict(FAIRFACE_RACE_MAP)
    return MatchedLabels(label_source(table), frame, summary)


def _refuse_ambiguous(found: pl.DataFrame, shown: pl.Series, path: Path) -> None:
    """A relative key that ends more than one input's path: an error naming the first few."""
    several = found.group_by("line", "key").agg("pos").filter(pl.col("pos").list.len() > 1).sort("line")
    if several.height:
        examples = "; ".join(
            f"{key} (line {line}): {', '.join(shown.gather(pos[:3]).to_list())}"
            for line, key, pos in several.head(3).iter_rows()
        )
        raise FaceattrError(
            f"--labels {path}: names that end more than one input's path ({examples}; {several.height} in all): "
            "give those rows a longer relative path or an absolute one"
        )


def _real_paths(paths: Sequence[str] | pl.Series) -> list[str]:
    """realpath of each file's folder (cached: few folders, many files) joined with the file name."""
    real_dir = functools.lru_cache(maxsize=4096)(os.path.realpath)
    return [os.path.join(real_dir(os.path.dirname(p)), os.path.basename(p)) for p in paths]


def label_source(table: LabelTable) -> str:
    """The label source a resumed run must match: the file (an index too: its labels can be rewritten under the
    same paths) by its format, path and content digest."""
    return f"{table.format}:{table.path.resolve()} sha256:{file_sha256(table.path)[:16]}"
