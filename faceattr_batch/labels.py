"""The label vocabulary and the UTKFace file-name grammar, in both directions.

Names look like ``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg``: age in years, gender 0 male / 1 female,
race 0 White / 1 Black / 2 Asian / 3 Indian / 4 Others, datetime ``yyyymmddHHMMSSfff`` (17 digits).

Parsing is vectorised (polars) because ``index`` and ``predict`` parse millions of names; ``parse_name`` is the
same code on one name, so there is exactly one grammar.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

GENDERS: tuple[str, ...] = ("male", "female")
RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
# Report bands: (label, lowest age, highest age inclusive). Fine where faces change fast, coarse where few exist.
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-2", 0, 2),
    ("3-9", 3, 9),
    ("10-19", 10, 19),
    ("20-29", 20, 29),
    ("30-39", 30, 39),
    ("40-49", 40, 49),
    ("50-59", 50, 59),
    ("60-69", 60, 69),
    ("70-79", 70, 79),
    ("80+", 80, 200),
)
AGE_BAND_NAMES: tuple[str, ...] = tuple(band for band, _, _ in AGE_BANDS)
MAX_AGE = 120  # UTKFace's oldest is 116; anything above is a broken name, not a person
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CHIP_SUFFIX = ".jpg.chip.jpg"

STATUS_OK = "ok"
STATUS_RECOVERED = "recovered"  # a grammar quirk whose labels are still certain; kept and flagged
STATUS_REJECTED = "rejected"  # labels missing or impossible; never given an invented label

_EXT = r"(?:jpe?g|png|webp|bmp)"
# Lenient on purpose: it also matches the quirks so each can be named. A missing race field makes the third
# group absent; a missing dot or a space shows in `sep`.
NAME_PATTERN = (
    r"(?i)^(?P<age>\d+)_(?P<gender>\d+)_(?:(?P<race>\d+)_)?(?P<stamp>\d+)(?P<sep>\s*\.?)"
    rf"(?P<ext>{_EXT}(?:\.chip\.{_EXT})?)$"
)


@dataclass(frozen=True)
class ParsedName:
    status: str
    reason: str | None
    age: int | None
    gender: int | None
    race: int | None
    captured_at: dt.datetime | None


def gender_code(value: str | int) -> int:
    """'female', 'f', '1' or 1 -> 1; raises ValueError naming the allowed values."""
    return _code(value, GENDERS, {"m": 0, "f": 1})


def race_code(value: str | int) -> int:
    return _code(value, RACES, {})


def _code(value: str | int, names: tuple[str, ...], short: dict[str, int]) -> int:
    text = str(value).strip().lower()
    lowered = [n.lower() for n in names]
    if text in lowered:
        return lowered.index(text)
    if text in short:
        return short[text]
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise ValueError(f"{value!r} is not one of {', '.join(names)} (or 0..{len(names) - 1})")


def age_band(age: int) -> str:
    for name, low, high in AGE_BANDS:
        if low <= age <= high:
            return name
    raise ValueError(f"age {age} is outside 0..{AGE_BANDS[-1][2]}")


def age_band_expr(age: pl.Expr) -> pl.Expr:
    """The report band of an age column (float ages are rounded first), as a polars expression."""
    rounded = age.round(0).cast(pl.Int64)
    expr = pl.when(rounded.is_null()).then(None)
    for name, low, high in AGE_BANDS:
        expr = expr.when(rounded.is_between(low, high)).then(pl.lit(name))
    return expr.otherwise(None).cast(pl.Enum(AGE_BAND_NAMES))


def format_name(age: int, gender: int, race: int, captured_at: dt.datetime, suffix: str = CHIP_SUFFIX) -> str:
    """The UTKFace name for these labels; ``parse_name(format_name(...))`` gives them back."""
    if not 0 <= age <= MAX_AGE:
        raise ValueError(f"age {age} is outside 0..{MAX_AGE}")
    if gender not in (0, 1):
        raise ValueError(f"gender {gender} is not 0 (male) or 1 (female)")
    if not 0 <= race < len(RACES):
        raise ValueError(f"race {race} is not 0..{len(RACES) - 1} ({', '.join(RACES)})")
    stamp = captured_at.strftime("%Y%m%d%H%M%S") + f"{captured_at.microsecond // 1000:03d}"
    return f"{age}_{gender}_{race}_{stamp}{suffix}"


def parse_names(names: pl.Series | list[str]) -> pl.DataFrame:
    """Parse file names into status, reason, age, gender, race and captured_at columns (one row per name)."""
    frame = pl.DataFrame({"name": pl.Series(names, dtype=pl.String)})
    return frame.select(parse_exprs(pl.col("name")))


def parse_exprs(name: pl.Expr) -> list[pl.Expr]:
    """The grammar as polars expressions over a column of file names (used by ``index`` and ``predict``)."""
    parts = name.str.extract_groups(NAME_PATTERN)
    field = parts.struct.field
    stamp = field("stamp")
    digits = stamp.str.len_chars()
    seconds = stamp.str.slice(0, 14).str.strptime(pl.Datetime("ms"), "%Y%m%d%H%M%S", strict=False)
    millis = pl.when(digits == 17).then(stamp.str.slice(14, 3).cast(pl.Int64, strict=False)).otherwise(0)
    captured = pl.when(digits >= 14).then(seconds + pl.duration(milliseconds=millis))
    age = field("age").cast(pl.Int64, strict=False)
    gender = field("gender").cast(pl.Int64, strict=False)
    race = field("race").cast(pl.Int64, strict=False)

    # First matching reason wins; rejections before recoverable quirks.
    rejected = [
        (stamp.is_null(), "not a UTKFace name {age}_{gender}_{race}_{datetime}.{ext}"),
        (race.is_null(), "no race field (age_gender_datetime): race unknown"),
        (age > MAX_AGE, f"age above {MAX_AGE}"),
        (~gender.is_in([0, 1]), "gender code not 0/1"),
        (race >= len(RACES), f"race code not 0..{len(RACES) - 1}"),
    ]
    recovered = [
        (field("sep").str.contains(r"\s"), "whitespace before the extension"),
        (field("sep") == "", "no dot before the extension"),
        (
            digits != 17,
            "datetime has " + digits.cast(pl.String) + " digits, not 17: captured_at to the second",
        ),
        (captured.is_null(), "datetime is not a valid date"),
    ]
    reason = pl.when(rejected[0][0]).then(pl.lit(rejected[0][1]))
    for cond, text in rejected[1:] + recovered:
        reason = reason.when(cond).then(text if isinstance(text, pl.Expr) else pl.lit(text))
    reason = reason.otherwise(None)
    is_rejected = pl.any_horizontal([cond for cond, _ in rejected]).fill_null(False)
    status = (
        pl.when(is_rejected)
        .then(pl.lit(STATUS_REJECTED))
        .when(reason.is_not_null())
        .then(pl.lit(STATUS_RECOVERED))
        .otherwise(pl.lit(STATUS_OK))
    )
    ok_gender = gender.is_in([0, 1]).fill_null(False)
    return [
        status.alias("status"),
        reason.alias("reason"),
        pl.when(age <= MAX_AGE).then(age).alias("age"),
        pl.when(ok_gender).then(gender).alias("gender"),
        pl.when(race < len(RACES)).then(race).alias("race"),
        pl.when(stamp.is_not_null()).then(captured).alias("captured_at"),
    ]


def parse_name(name: str) -> ParsedName:
    row = parse_names([name]).row(0, named=True)
    return ParsedName(**row)


def label_exprs() -> list[pl.Expr]:
    """Readable label columns from the integer codes (gender_label, race_label, age_band)."""
    return [
        pl.col("gender").replace_strict(dict(enumerate(GENDERS)), default=None).alias("gender_label"),
        pl.col("race").replace_strict(dict(enumerate(RACES)), default=None).alias("race_label"),
        age_band_expr(pl.col("age")).alias("age_band"),
    ]
