"""The UTKFace name grammar, both ways, and every quirk of the real dataset (as literal names, no images)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceattr_batch.data.labels import (
    AGE_BAND_NAMES,
    GENDERS,
    MAX_AGE,
    RACES,
    STATUS_OK,
    STATUS_RECOVERED,
    STATUS_REJECTED,
    age_band,
    code_label,
    format_name,
    gender_code,
    label_code,
    label_exprs,
    parse_exprs,
    parse_frame,
    parse_name,
    parse_names,
    race_code,
)

stamps = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)  # names hold milliseconds
)
suffixes = st.sampled_from([".jpg.chip.jpg", ".jpg", ".png", ".JPG", ".jpeg", ".webp", ".bmp", ".png.chip.jpg"])


@settings(max_examples=300, deadline=None)
@given(
    age=st.integers(0, MAX_AGE),
    gender=st.integers(0, 1),
    race=st.integers(0, len(RACES) - 1),
    stamp=stamps,
    suffix=suffixes,
)
def test_parse_of_format_is_identity(age, gender, race, stamp, suffix):
    parsed = parse_name(format_name(age, gender, race, stamp, suffix=suffix))
    assert (parsed.status, parsed.reason) == (STATUS_OK, None)
    assert (parsed.age, parsed.gender, parsed.race, parsed.captured_at) == (age, gender, race, stamp)


@settings(max_examples=200, deadline=None)
@given(
    age=st.integers(0, MAX_AGE),
    gender=st.integers(0, 1),
    race=st.integers(0, len(RACES) - 1),
    digits=st.text("0123456789", min_size=17, max_size=17),
)
def test_format_of_parse_is_identity_for_valid_strict_names(age, gender, race, digits):
    name = f"{age}_{gender}_{race}_{digits}.jpg.chip.jpg"
    parsed = parse_name(name)
    if parsed.captured_at is None:  # not a calendar date: labels kept, flagged
        assert parsed.status == STATUS_RECOVERED and "not a valid date" in parsed.reason
        return
    assert parsed.status == STATUS_OK
    assert format_name(parsed.age, parsed.gender, parsed.race, parsed.captured_at) == name


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=20))
def test_any_text_parses_without_crashing_and_both_paths_agree(names):
    frame = pl.DataFrame({"name": names})
    fast = parse_frame(frame).drop("name")
    reference = frame.select(parse_exprs(pl.col("name")))
    assert fast.equals(reference)
    assert set(fast["status"]) <= {STATUS_OK, STATUS_RECOVERED, STATUS_REJECTED}
    rejected = fast.filter(pl.col("status") == STATUS_REJECTED)
    assert rejected["reason"].null_count() == 0


# The 8 names of the real dataset that break the strict grammar, verbatim.
QUIRKS = {
    "39_1_20170116174525125.jpg.chip.jpg": (STATUS_REJECTED, "no race field", (39, 1, None)),
    "61_1_20170109142408075.jpg.chip.jpg": (STATUS_REJECTED, "no race field", (61, 1, None)),
    "61_1_20170109150557335.jpg.chip.jpg": (STATUS_REJECTED, "no race field", (61, 1, None)),
    "24_0_1_20170116220224657 .jpg.chip.jpg": (STATUS_RECOVERED, "whitespace before the extension", (24, 0, 1)),
    "55_0_0_20170116232725357jpg.chip.jpg": (STATUS_RECOVERED, "no dot before the extension", (55, 0, 0)),
    "14_0_0_2017011022340900.jpg.chip.jpg": (STATUS_RECOVERED, "16 digits", (14, 0, 0)),
    "28_1_2_201701161846515488.jpg.chip.jpg": (STATUS_RECOVERED, "18 digits", (28, 1, 2)),
    "38_0_1_201701162330572788.jpg.chip.jpg": (STATUS_RECOVERED, "18 digits", (38, 0, 1)),
}


@pytest.mark.parametrize("name", sorted(QUIRKS))
def test_each_real_quirk_is_classified(name):
    status, reason, labels = QUIRKS[name]
    parsed = parse_name(name)
    assert parsed.status == status
    assert reason in parsed.reason
    assert (parsed.age, parsed.gender, parsed.race) == labels


def test_quirk_counts_five_recovered_three_rejected():
    statuses = parse_names(list(QUIRKS))["status"].value_counts()
    assert dict(statuses.iter_rows()) == {STATUS_RECOVERED: 5, STATUS_REJECTED: 3}


def test_quirk_datetimes_are_kept_to_the_second_when_digits_are_off():
    assert parse_name("14_0_0_2017011022340900.jpg.chip.jpg").captured_at == dt.datetime(2017, 1, 10, 22, 34, 9)
    assert parse_name("28_1_2_201701161846515488.jpg.chip.jpg").captured_at == dt.datetime(2017, 1, 16, 18, 46, 51)
    exact = parse_name("24_0_1_20170116220224657 .jpg.chip.jpg").captured_at
    assert exact == dt.datetime(2017, 1, 16, 22, 2, 24, 657000)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "not a UTKFace name"),
        ("face.jpg", "not a UTKFace name"),
        ("1_0_0_20170116174525125", "not a UTKFace name"),  # no extension
        ("1_0_0_20170116174525125.gif", "not a UTKFace name"),
        ("130_0_0_20170116174525125.jpg.chip.jpg", "age above"),
        ("30_2_0_20170116174525125.jpg.chip.jpg", "gender code"),
        ("30_1_7_20170116174525125.jpg.chip.jpg", "race code"),
        ("99999999999999999999_0_0_20170116174525125.jpg.chip.jpg", "age above"),  # past Int64: not a null "ok"
        ("30_99999999999999999999_0_20170116174525125.jpg.chip.jpg", "gender code"),
        ("30_1_99999999999999999999_20170116174525125.jpg.chip.jpg", "race code"),
    ],
)
def test_bad_names_are_rejected_with_a_reason(name, reason):
    parsed = parse_name(name)
    assert parsed.status == STATUS_REJECTED
    assert reason in parsed.reason


def test_invalid_labels_are_not_kept_on_rejected_rows():
    parsed = parse_name("130_0_0_20170116174525125.jpg.chip.jpg")
    assert parsed.age is None and parsed.gender == 0
    assert parse_name("30_1_7_20170116174525125.jpg.chip.jpg").race is None


def test_an_impossible_date_keeps_labels_and_flags_the_row():
    parsed = parse_name("30_1_2_20171399250000000.jpg.chip.jpg")
    assert (parsed.status, parsed.age, parsed.race, parsed.captured_at) == (STATUS_RECOVERED, 30, 2, None)
    assert "not a valid date" in parsed.reason


def test_extension_case_does_not_matter():
    assert parse_name("30_1_2_20170116174525125.JPG").status == STATUS_OK
    assert parse_name("30_1_2_20170116174525125.Jpg.Chip.Jpg").status == STATUS_OK


def test_format_name_refuses_invalid_labels():
    with pytest.raises(ValueError, match="age 121"):
        format_name(121, 0, 0, dt.datetime(2017, 1, 1))
    with pytest.raises(ValueError, match="gender 2"):
        format_name(30, 2, 0, dt.datetime(2017, 1, 1))
    with pytest.raises(ValueError, match="race 5"):
        format_name(30, 0, 5, dt.datetime(2017, 1, 1))


def test_codes_and_bands():
    assert gender_code("female") == gender_code("F") == gender_code(1) == 1
    assert race_code("indian") == 3
    with pytest.raises(ValueError, match="White, Black"):
        race_code("martian")
    assert [age_band(a) for a in (0, 2, 3, 19, 80, 116)] == ["0-2", "0-2", "3-9", "10-19", "80+", "80+"]


def test_label_columns_are_readable():
    frame = parse_names(["30_1_2_20170116174525125.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg"])
    labels = frame.with_columns(label_exprs()).select("gender_label", "race_label", "age_band").rows()
    assert labels == [("female", "Asian", "30-39"), ("female", None, "30-39")]
    assert frame.with_columns(label_exprs()).select("gender_label", "race_label", "age_band").dtypes == [
        pl.Enum(GENDERS),
        pl.Enum(RACES),
        pl.Enum(AGE_BAND_NAMES),
    ]


def test_codes_and_enum_labels_convert_both_ways():
    codes = pl.DataFrame({"race": [0, 4, None, 7]})
    labels = codes.select(code_label(pl.col("race"), RACES))
    assert labels.dtypes == [pl.Enum(RACES)] and labels["race"].to_list() == ["White", "Others", None, None]
    back = labels.select(label_code(pl.col("race"), RACES))["race"].to_list()
    assert back == [0, 4, None, None]
    plain = pl.DataFrame({"g": ["female", "male", "Female", None]})  # exact spellings only, as written by us
    assert plain.select(label_code(pl.col("g"), GENDERS))["g"].to_list() == [1, 0, None, None]


def test_year_zero_is_not_a_date():
    """Found by the property test above: polars parsed 0000-01-10, which Python's datetime cannot hold, so reading
    the row raised. Now it is a recovered name whose capture date is unknown."""
    parsed = parse_name("0_0_0_00000110000000000.jpg.chip.jpg")
    assert (parsed.status, parsed.captured_at, parsed.age) == (STATUS_RECOVERED, None, 0)
    assert "not a valid date" in parsed.reason


def test_years_before_1000_keep_four_digits():
    """Found by the same property test: strftime's %Y wrote year 1 as "1", so the name lost three digits."""
    import datetime as dt

    name = format_name(0, 0, 0, dt.datetime(1, 1, 10))
    assert name == "0_0_0_00010110000000000.jpg.chip.jpg"
    assert parse_name(name).captured_at == dt.datetime(1, 1, 10)


def test_a_stamp_that_does_not_read_back_as_its_digits_is_no_date_and_other_digits_are_no_name():
    """A reviewer's findings: second 60 rolled into the next year (status ok, 2018-01-01 00:00), and Arabic-Indic
    digits were taken as digits (rejected as 'age above 120')."""
    rolled = parse_name("25_0_0_20171231235960000.jpg.chip.jpg")
    assert (rolled.status, rolled.captured_at, rolled.age) == (STATUS_RECOVERED, None, 25)
    assert "not a valid date" in rolled.reason
    arabic = parse_name("\u0662\u0665_0_0_20170116174525125.jpg.chip.jpg")
    assert (arabic.status, arabic.age) == ("rejected", None) and arabic.reason.startswith("not a UTKFace name")
