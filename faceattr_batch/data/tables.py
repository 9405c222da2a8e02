"""Tables users bring (label files, other tools' predictions) read as text, each row with the line an editor shows.

Both ``data.label_files`` and ``data.foreign_predictions`` report a value they cannot read as a problem row
(``PROBLEM_SCHEMA``: line, column, value, reason) and leave that value null, so the report shows both files'
problems alike.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError

PROBLEM_SCHEMA = {"line": pl.Int64, "column": pl.String, "value": pl.String, "reason": pl.String}
# each row's line (a CSV's) or row number (a Parquet's), beside a file's own columns: a name no file's column has
LINE = "__line__"
# what Python's str.strip() strips (polars' strip_chars() keeps \x1c-\x1f): blank lines are alike in both readings
_WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())


def problem_frame(rows: list[tuple]) -> pl.DataFrame:
    """(line, column, value, reason) tuples -> a problems frame."""
    return pl.DataFrame(rows, schema=PROBLEM_SCHEMA, orient="row")


def delimiter(header: str) -> str:
    """A header line's field separator: tab, semicolon (where no comma is) or comma."""
    return "\t" if "\t" in header else ";" if ";" in header and "," not in header else ","


def read_text(path: Path, name: str) -> str:
    """The file as UTF-8 (a byte-order mark dropped); ``name`` starts the error message (e.g. "--labels x.csv")."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise FaceattrError(f"{name}: not UTF-8 text (byte {err.start})") from None


def read_csv(path: Path, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every field as text, each row with the line it starts on in ``LINE`` (a quoted field may span lines);
    blank lines are no rows; a row with the wrong number of fields is a problem, not read. Text without a quote is
    split line by line in polars (a million rows: 0.5 s, where Python's csv module, which reads the rest, takes 8):
    the same rows either way."""
    text = read_text(path, name)  # line ends read as "\n" (universal newlines)
    first = next((line for line in io.StringIO(text) if line.strip()), None)  # read lazily: the rest is not split
    if first is None:
        raise FaceattrError(f"{name}: an empty file")
    sep = delimiter(first)
    rows, bad = _csv_records(text, sep, name) if '"' in text else _split_lines(text.split("\n"), sep, name)
    reason = pl.format("{} fields where the header has {}: row not read", "count", pl.lit(rows.width - 1))
    bad = bad.select("line", column=pl.lit(None, pl.String), value=pl.lit(None, pl.String), reason=reason)
    return rows, bad.cast(PROBLEM_SCHEMA)


def _header(fields: list[str] | None, name: str) -> list[str]:
    """The first row that is not blank, its names stripped, an empty one (pandas' index) named ``column_<i>`` by
    its position, as polars names it: none at all, or a name twice, is an error."""
    if fields is None:
        raise FaceattrError(f"{name}: no header row (every line holds only empty fields)")
    header = [field.strip() or f"column_{i}" for i, field in enumerate(fields)]
    if len(set(header)) < len(header):
        raise FaceattrError(f"{name}: a column name repeats in the header ({', '.join(header)})")
    return header


def _split_lines(lines: list[str], sep: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Quote-free text's rows (the header's columns, then ``LINE``) and ragged rows (``line``, ``count``): each
    line a row split at ``sep``, as the csv module splits a line without quotes."""
    frame = pl.DataFrame({"text": lines}).with_row_index(LINE, offset=1).with_columns(pl.col(LINE).cast(pl.Int64))
    blank = pl.col("text").str.replace_all(sep, "", literal=True).str.strip_chars(_WHITESPACE) == ""
    frame = frame.filter(~blank).select(LINE, pl.col("text").str.split(sep).alias("fields"))
    header = _header(frame["fields"][0].to_list() if frame.height else None, name)
    rows = frame.slice(1).with_columns(pl.col("fields").list.len().alias("count"))
    right = pl.col("count") == len(header)
    fields = [pl.col("fields").list.get(i).alias(column) for i, column in enumerate(header)]
    return rows.filter(right).select(*fields, LINE), rows.filter(~right).select(pl.col(LINE).alias("line"), "count")


def _csv_records(text: str, sep: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``_split_lines``' two, read by the csv module (quoted fields: separators and line breaks inside)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header: list[str] | None = None  # the first row that is not blank
    lines, records, bad = [], [], []
    start = 1
    for record in reader:
        if not any(field.strip() for field in record):
            pass
        elif header is None:
            header = record
        elif len(record) == len(header):
            lines.append(start)
            records.append(record)
        else:
            bad.append((start, len(record)))
        start = reader.line_num + 1
    header = _header(header, name)
    columns = list(zip(*records, strict=True)) if records else [()] * len(header)
    rows = pl.DataFrame([pl.Series(n, values, pl.String) for n, values in zip(header, columns, strict=True)])
    rows = rows.with_columns(pl.Series(LINE, lines, dtype=pl.Int64))
    return rows, pl.DataFrame(bad, schema={"line": pl.Int64, "count": pl.Int64}, orient="row")


def as_text(series: pl.Series) -> pl.Series:
    """Any column as stripped text, empty as null; whole floats without their ``.0`` (a NaN is a missing value)."""
    if series.dtype.is_float():
        values = series.fill_nan(None)
        whole = pl.select(pl.when(values.round(0) == values).then(values.cast(pl.Int64, strict=False))).to_series()
        series = pl.select(pl.coalesce(whole.cast(pl.String), values.cast(pl.String))).to_series()
    text = series.cast(pl.String).str.strip_chars()
    return pl.select(pl.when(text != "").then(text)).to_series().alias(series.name)


def codes(text: pl.Series, lines: pl.Series, column: str, code_of: Callable) -> tuple[pl.Series, pl.DataFrame]:
    """Each distinct value through ``code_of`` (the vocabulary's own parser): codes, and a problem per row whose
    value it refuses."""
    found, reasons = {}, {}
    for value in text.drop_nulls().unique().to_list():
        try:
            found[value] = code_of(value)
        except (ValueError, KeyError) as err:
            reasons[value] = err.args[0]
    bad = pl.DataFrame({"line": lines, "value": text}).filter(pl.col("value").is_in(list(reasons)))
    problems = bad.select("line", pl.lit(column).alias("column"), "value", reason=pl.col("value").replace(reasons))
    return text.replace_strict(found, default=None, return_dtype=pl.Int64), problems
