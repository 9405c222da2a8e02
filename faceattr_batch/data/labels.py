"""The label vocabulary and the UTKFace file-name grammar, in both directions.

Names look like ``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg``: age in years, gender 0 male / 1 female,
race 0 White / 1 Black / 2 Asian / 3 Indian / 4 Others, datetime ``yyyymmddHHMMSSfff`` (17 digits).

Parsing is vectorised (polars) because ``index`` and ``predict`` parse millions of names; ``parse_name`` is the
same code on one name, so there is exactly one grammar.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import polars as pl

GENDERS: tuple[str, ...] = ("male", "female")
RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
RACE_KEYS: tuple[str, ...] = tuple(race.lower() for race in RACES)  # in names: p_white, race_recall_white
FAIRFACE_RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
# other datasets' and tools' race classes -> ours, as ``race_words`` spells them: FairFace's seven, deepface's six
# (white, black, asian, indian, middle eastern, latino hispanic); the reports state the mapping they applied
OTHER_RACES: dict[str, str] = {
    "white": "White", "black": "Black", "asian": "Asian", "indian": "Indian",
    "east asian": "Asian", "southeast asian": "Asian", "latino hispanic": "Others", "middle eastern": "Others",
}  # fmt: skip
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
# an age bin, in Python's and polars' regex syntax alike: "20-29" (low, high), then "more than 70", "over 70", "70+"
AGE_BIN_CLOSED = r"^(?P<low>\d+)\s*-\s*(?P<high>\d+)$"
AGE_BINS_OPEN = (r"(?i)^(?:more than|over)\s*(\d+)$", r"^(\d+)\s*\+$")


def age_bin_ends(text: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """An age bin's two ends, both included, from its (stripped) text: "20-29" -> 20, 29; "more than 70", "over 70"
    and "70+" -> 70, ``MAX_AGE``; null for anything else."""
    closed = text.str.extract_groups(AGE_BIN_CLOSED)
    opened = pl.coalesce(*(text.str.extract(pattern) for pattern in AGE_BINS_OPEN))
    low = pl.coalesce(closed.struct.field("low"), opened).cast(pl.Int64)
    high = pl.when(opened.is_not_null()).then(MAX_AGE).otherwise(closed.struct.field("high").cast(pl.Int64))
    return low, high


IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CHIP_SUFFIX = ".jpg.chip.jpg"

STATUS_OK = "ok"
STATUS_RECOVERED = "recovered"  # a grammar quirk whose labels are still certain; kept and flagged
STATUS_REJECTED = "rejected"  # labels missing or impossible; never given an invented label

_EXT = r"(?:jpe?g|png|webp|bmp)"
# Lenient on purpose: it also matches the quirks so each can be named. A missing race field makes the third
# group absent; a missing dot or a space shows in `sep`.
NAME_PATTERN = (
    r"(?i)^(?P<age>[0-9]+)_(?P<gender>[0-9]+)_(?:(?P<race>[0-9]+)_)?(?P<stamp>[0-9]+)(?P<sep>\s*\.?)"
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


def race_words(text: str) -> str:
    """A race class as ``OTHER_RACES`` spells it: lower case, "_" and "-" as single spaces."""
    return " ".join(text.replace("_", " ").replace("-", " ").split()).lower()


def other_race_code(value: str | int) -> int:
    """Ours (``race_code``) or a class of ``OTHER_RACES`` mapped to ours; ValueError naming both vocabularies."""
    try:
        return race_code(OTHER_RACES.get(race_words(str(value)), value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not one of {', '.join(RACES)} (or 0..{len(RACES) - 1}), nor of {', '.join(OTHER_RACES)}"
        ) from None


def _code(value: str | int, names: tuple[str, ...], short: dict[str, int]) -> int:
    text = str(value).strip().lower()
    lowered = [n.lower() for n in names]
    if text in lowered:
        return lowered.index(text)
    if text in short:
        return short[text]
    number = re.fullmatch(r"([0-9]+)(?:\.0*)?", text)  # 1 or 1.0 (a code column with a gap, as pandas writes it)
    if number and int(number[1]) < len(names):
        return int(number[1])
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
    # the year by hand: strftime's %Y gives "1", not "0001", for years before 1000 on glibc
    stamp = f"{captured_at.year:04d}" + captured_at.strftime("%m%d%H%M%S") + f"{captured_at.microsecond // 1000:03d}"
    return f"{age}_{gender}_{race}_{stamp}{suffix}"


def parse_names(names: pl.Series | list[str]) -> pl.DataFrame:
    """Parse file names into status, reason, age, gender, race and captured_at columns (one row per name)."""
    frame = pl.DataFrame({"name": pl.Series(names, dtype=pl.String)})
    return parse_frame(frame).drop("name")


# Names in exactly the documented form skip the (slower) lenient regex: a split on "_" is enough for them.
STRICT_PATTERN = r"^[0-9]{1,3}_[01]_[0-4]_[0-9]{17}\.jpg\.chip\.jpg$"
_PARSED = ("status", "reason", "age", "gender", "race", "captured_at")


def parse_frame(frame: pl.DataFrame, column: str = "name") -> pl.DataFrame:
    """``frame`` plus the parsed columns of ``parse_exprs``, computed in stages so each regex runs once.

    The fast path for millions of names (``index``): strict names are split on ``_``; only the rest go through
    the lenient regex. Same grammar and results as ``parse_exprs``.
    """
    name = pl.col(column)
    strict = name.str.contains(STRICT_PATTERN)
    split = name.str.splitn("_", 4).struct.rename_fields(["age", "gender", "race", "rest"])
    rest = split.struct.field("rest")
    fast = pl.struct(
        split.struct.field("age"),
        split.struct.field("gender"),
        split.struct.field("race"),
        rest.str.slice(0, 17).alias("stamp"),
        pl.lit(".").alias("sep"),
        rest.str.slice(18).alias("ext"),
    )
    # the regex only sees the non-strict names (nulls cost nothing)
    lenient = pl.when(strict).then(None).otherwise(name).str.extract_groups(NAME_PATTERN)
    parts = pl.when(strict).then(fast).otherwise(lenient)
    typed = _typed_fields(pl.col("_parts"))
    staged = frame.with_columns(parts.alias("_parts")).with_columns(**{f"_{key}": expr for key, expr in typed.items()})
    exprs = _classify({key: pl.col(f"_{key}") for key in typed})
    return staged.with_columns(exprs).drop("_parts", *(f"_{key}" for key in typed))


def parse_exprs(name: pl.Expr) -> list[pl.Expr]:
    """The grammar as polars expressions over a column of file names.

    Each output expression re-evaluates the regex, so over millions of names prefer ``parse_frame``.
    """
    return _classify(_typed_fields(name.str.extract_groups(NAME_PATTERN)))


def _typed_fields(parts: pl.Expr) -> dict[str, pl.Expr]:
    """Typed fields from the grammar's string groups (age, gender, race, stamp, sep, ext)."""
    field = parts.struct.field
    stamp = field("stamp")
    digits = stamp.str.len_chars()
    seconds = stamp.str.slice(0, 14).str.strptime(pl.Datetime("ms"), "%Y%m%d%H%M%S", strict=False)
    # polars reads year 0000 as a date; Python's datetime (and so every reader of the Parquet in Python) cannot;
    # and it rolls a second 60 into the next minute: a stamp is a date only when it reads back as its own digits
    own_digits = seconds.dt.strftime("%Y%m%d%H%M%S") == stamp.str.slice(0, 14)
    seconds = pl.when((seconds.dt.year() >= 1) & own_digits).then(seconds)
    millis = pl.when(digits == 17).then(stamp.str.slice(14, 3).cast(pl.Int64, strict=False)).otherwise(0)
    return {
        "age": field("age").cast(pl.Int64, strict=False),
        "gender": field("gender").cast(pl.Int64, strict=False),
        "race": field("race").cast(pl.Int64, strict=False),
        "race_field": field("race"),
        "stamp": stamp,
        "digits": digits,
        "sep": field("sep"),
        "captured": pl.when(digits >= 14).then(seconds + pl.duration(milliseconds=millis)),
    }


def _classify(f: dict[str, pl.Expr]) -> list[pl.Expr]:
    age, gender, race, stamp, digits, captured = (
        f[k] for k in ("age", "gender", "race", "stamp", "digits", "captured")
    )
    # First matching reason wins; rejections before recoverable quirks.
    # a field of more digits than Int64 holds casts to null: too large, so rejected like any code out of range
    rejected = [
        (stamp.is_null(), "not a UTKFace name {age}_{gender}_{race}_{datetime}.{ext}"),
        (f["race_field"].is_null(), "no race field (age_gender_datetime): race unknown"),
        (age.is_null() | (age > MAX_AGE), f"age above {MAX_AGE}"),
        (gender.is_null() | ~gender.is_in([0, 1]), "gender code not 0/1"),
        (race.is_null() | (race >= len(RACES)), f"race code not 0..{len(RACES) - 1}"),
    ]
    recovered = [
        (f["sep"].str.contains(r"\s"), "whitespace before the extension"),
        (f["sep"] == "", "no dot before the extension"),
        (captured.is_null(), "datetime is not a valid date: captured_at unknown"),
        (
            digits != 17,
            "datetime has " + digits.cast(pl.String) + " digits, not 17: captured_at to the second",
        ),
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


def code_label(code: pl.Expr, names: tuple[str, ...]) -> pl.Expr:
    """Integer codes -> polars Enum labels over ``names`` (``GENDERS``, ``RACES``); null for null or unknown codes.

    Enum (Arrow dictionary) labels: a million rows cost little to hold and write, and the order stays the
    vocabulary's, not the alphabet's.
    """
    return code.replace_strict(dict(enumerate(names)), default=None, return_dtype=pl.String).cast(pl.Enum(names))


def label_code(label: pl.Expr, names: tuple[str, ...]) -> pl.Expr:
    """Labels (strings or Enum, spelled as in ``names``) -> Int64 codes; null for anything else."""
    return label.cast(pl.String).replace_strict(
        {name: code for code, name in enumerate(names)}, default=None, return_dtype=pl.Int64
    )


def label_exprs() -> list[pl.Expr]:
    """Readable Enum label columns from the integer codes: gender_label, race_label, age_band."""
    return [
        code_label(pl.col("gender"), GENDERS).alias("gender_label"),
        code_label(pl.col("race"), RACES).alias("race_label"),
        age_band_expr(pl.col("age")).alias("age_band"),
    ]
