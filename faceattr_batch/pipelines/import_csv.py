"""Import the 48x48 "age_gender.csv" that circulates for UTKFace as image files with UTKFace names.

Columns ``age,ethnicity,gender,img_name,pixels``; ``pixels`` is a space-separated string of 48*48 grayscale
values. Each good row becomes a lossless PNG named ``{age}_{gender}_{race}_{datetime}.png``
(``labels.format_name``) so every other command reads it like a UTKFace chip. The datetime comes from
``img_name`` when it holds one, else it is a synthetic stamp (2000-01-01 plus the row number in ms).
A bad row (wrong pixel count, non-numeric or out-of-range values, bad labels) is reported with its row
number and skipped; only an unreadable file or missing columns raise ``FaceattrError``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from faceattr_batch.data.labels import format_name
from faceattr_batch.data.tables import LINE
from faceattr_batch.errors import FaceattrError, first_line, require_file
from faceattr_batch.io.atomic import replacing
from faceattr_batch.io.manifest_folder import check_output_folder

log = logging.getLogger(__name__)

SIDE = 48
COLUMNS = ("age", "ethnicity", "gender", "img_name", "pixels")
SUFFIX = ".png"
SYNTHETIC_EPOCH = dt.datetime(2000, 1, 1)
_STAMP = re.compile(r"(\d{14})(\d{0,3})")
_BATCH = 2048  # rows decoded at a time: the pixel strings of the whole file would need ~1 GB as lists


@dataclass(frozen=True)
class ImportCsvOptions:
    csv: Path
    out_dir: Path
    side: int = SIDE  # image width = height; pixels per row must be side * side
    overwrite: bool = False  # write into a folder that is not empty (files of the same name are replaced)


@dataclass
class ImportCsvResult:
    out_dir: Path
    rows: int
    written: int
    bad_rows: list[dict] = field(default_factory=list)  # {"row": 1-based data row, "line": file line, "reason"}

    @property
    def summary(self) -> dict:
        return {
            "csv_rows": self.rows,
            "written": self.written,
            "out_dir": str(self.out_dir),
            "bad_rows": len(self.bad_rows),
            "bad_reasons": dict(Counter(bad["reason"] for bad in self.bad_rows)),
            "bad": self.bad_rows,
        }


def import_csv(options: ImportCsvOptions) -> ImportCsvResult:
    """Write one PNG per good CSV row into ``options.out_dir``; bad rows are listed, not fatal."""
    require_file(options.csv, "", "CSV file")
    out_dir = Path(options.out_dir)
    made = not out_dir.exists()
    # before reading the CSV: an unwritable output fails at once, and another run's images are not replaced unasked
    check_output_folder(out_dir, options.overwrite, "files of the same name")
    try:
        frame = _read(Path(options.csv))
    except FaceattrError:
        if made:  # a CSV that cannot be read leaves no empty folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    result = ImportCsvResult(out_dir=out_dir, rows=frame.height, written=0)
    used: set[str] = set()
    clashes: dict[str, dt.datetime] = {}
    for start in range(0, frame.height, _BATCH):
        batch = frame.slice(start, _BATCH)
        pixels, pixel_errors = _decode_pixels(batch["pixels"], options.side)
        for offset, row in enumerate(batch.select("age", "ethnicity", "gender", "img_name", LINE).iter_rows()):
            number, line, row = start + offset + 1, row[-1], row[:-1]
            reason = pixel_errors[offset] or _label_error(*row[:3])
            if reason is None:
                name = _unique_name(row, number, used, clashes)
                _write_png(out_dir / name, pixels[offset], options.side)
                result.written += 1
            else:
                result.bad_rows.append({"row": number, "line": line, "reason": reason})
    log.info("wrote %d images to %s; %d bad rows", result.written, out_dir, len(result.bad_rows))
    return result


def _read(path: Path) -> pl.DataFrame:
    # every column as text: a non-numeric value is a bad row to report, not a parse failure
    error = None
    try:
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
        spans_lines = frame.select(pl.any_horizontal(pl.all().str.contains("\n", literal=True).any())).item()
    except (OSError, pl.exceptions.PolarsError) as err:
        error, spans_lines = err, True
    # no field of this format holds a line break: a quote left open swallowed the lines after it (into one field,
    # or the read failed), so quotes are read as plain characters: that row is judged as any other, the rest kept
    line = _unclosed_quote_line(path) if spans_lines else None
    if line is not None:
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True, quote_char=None)
        log.warning("%s: a quote on line %d runs past the line's end; the file's quotes are read as plain characters",
                    path, line)  # fmt: skip
    elif error is not None:
        raise FaceattrError(f"{path}: cannot read as CSV ({first_line(error)})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise FaceattrError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)} (found "
            f"{','.join(frame.columns) or 'none'})"
        )
    # a blank line reads as a row of nulls: not a row (as the other CSV readers have it), but it moves the lines on
    frame = frame.select(COLUMNS).with_row_index(LINE, offset=2).cast({LINE: pl.Int64})
    return frame.filter(~pl.all_horizontal(pl.col(COLUMNS).is_null()))


def _unclosed_quote_line(path: Path) -> int | None:
    """The first line with an odd number of double quotes, or None (also for a file that cannot be read)."""
    try:
        with open(path, "rb") as file:
            return next((number for number, line in enumerate(file, 1) if line.count(b'"') % 2), None)
    except OSError:
        return None


def _decode_pixels(column: pl.Series, side: int) -> tuple[list, list[str | None]]:
    """Per row: a side*side uint8 array or None, and an error reason or None (checked as whole columns: a Python
    loop over the values cost 0.4 ms a row)."""
    want = side * side
    checks = (
        column.to_frame("p")
        .select(pl.col("p").str.strip_chars().str.split(by=" ").alias("text"))
        .with_columns(pl.col("text").list.eval(pl.element().cast(pl.Int32, strict=False)).alias("nums"))
        .select(
            "text",
            "nums",
            empty=pl.col("text").is_null() | (pl.col("text") == [""]),
            count=pl.col("nums").list.len(),
            numeric=pl.col("nums").list.eval(pl.element().is_not_null()).list.all(),
            in_range=pl.col("nums").list.min().ge(0) & pl.col("nums").list.max().le(255),
        )
    )
    good = (~checks["empty"] & (checks["count"] == want) & checks["numeric"] & checks["in_range"]).to_list()
    values = checks["nums"].filter(pl.Series(good)).explode().to_numpy().astype(np.uint8).reshape(-1, want)
    arrays: list = [None] * len(good)
    for row, pixels in zip((i for i, ok in enumerate(good) if ok), values, strict=True):
        arrays[row] = pixels
    errors = [None if ok else _pixel_error(checks.row(i, named=True), side) for i, ok in enumerate(good)]
    return arrays, errors


def _pixel_error(check: dict, side: int) -> str:
    """Why a row's pixels are refused (the first failed check)."""
    if check["empty"]:
        return "pixels: empty"
    if check["count"] != side * side:
        return f"pixels: {check['count']} values, expected {side * side} ({side}x{side})"
    if not check["numeric"]:
        bad = next(t for t, v in zip(check["text"], check["nums"], strict=True) if v is None)
        if not (bad.lstrip("+-").isascii() and bad.lstrip("+-").isdigit()):  # else a number too large for Int32
            return f"pixels: non-numeric value {bad[:20]!r}"
    return "pixels: value outside 0..255"


def _label_error(age: str | None, race: str | None, gender: str | None) -> str | None:
    for column, value in (("age", age), ("ethnicity", race), ("gender", gender)):
        if value is None or not value.strip().isdecimal():  # what int() reads: isdigit() takes "²"
            return f"{column}: {value!r} is not a non-negative integer"
    try:
        format_name(int(age), int(gender), int(race), SYNTHETIC_EPOCH)
    except ValueError as err:
        return f"labels: {err}"
    return None


def _stamp(img_name: str | None, row: int) -> dt.datetime:
    """The datetime in ``img_name`` (yyyymmddHHMMSS[fff]) when it parses, else a synthetic one per row."""
    match = _STAMP.search(img_name or "")
    if match:
        try:
            seconds = dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S")
            millis = int(match.group(2).ljust(3, "0")) if match.group(2) else 0
            return seconds + dt.timedelta(milliseconds=millis)
        except ValueError:
            pass
    return SYNTHETIC_EPOCH + dt.timedelta(milliseconds=row)


def _unique_name(row: tuple, number: int, used: set[str], clashes: dict[str, dt.datetime]) -> str:
    """format_name of the row; a clash (same labels and stamp) moves the stamp on by 1 ms until unique (from the
    synthetic stamp when the row's own reaches the year 9999's end). ``clashes``: per first name, where the last
    clash's walk ended, so the k-th row of one name does not walk over the k - 1 before it again."""
    age, race, gender, img_name = row
    first = format_name(int(age), int(gender), int(race), _stamp(img_name, number), suffix=SUFFIX)
    stamp, own = clashes.get(first, _stamp(img_name, number)), True
    while True:
        name = format_name(int(age), int(gender), int(race), stamp, suffix=SUFFIX)
        if name not in used:
            used.add(name)
            if name != first and own:  # a walk from the synthetic stamp is this row's, not the name's
                clashes[first] = stamp
            return name
        try:
            stamp += dt.timedelta(milliseconds=1)
        except OverflowError:
            stamp, own = _stamp(None, number), False


def _write_png(path: Path, pixels, side: int) -> None:
    try:  # renamed into place, not synced one by one (4 ms a file: over 1.5 min for the 23,705-row CSV)
        with replacing(path, durable=False) as tmp:
            Image.fromarray(pixels.reshape(side, side)).save(tmp, format="PNG")
    except OSError as err:
        raise FaceattrError(f"{path}: cannot write ({err.strerror or err})") from None
