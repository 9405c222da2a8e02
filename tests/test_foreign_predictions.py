"""Other tools' predictions tables (deepface, insightface, a custom model) read into the predictions schema: codes,
probabilities, labels, nulls, problems with their lines, and the one-line errors. Small files made in tmp_path."""

from __future__ import annotations

import io

import polars as pl
import pytest
from rich.console import Console

from faceattr_batch import summaries_runs
from faceattr_batch.data.foreign_predictions import (
    NO_PREDICTION,
    is_own_predictions,
    read_foreign_predictions,
)
from faceattr_batch.data.labels import OTHER_RACES
from faceattr_batch.errors import FaceattrError
from faceattr_batch.reporting.foreign_page import foreign_html
from faceattr_batch.schema import PREDICTION_FIELDS, RACE_PROB_COLUMNS

DEEPFACE_RACES = ("asian", "indian", "black", "white", "middle eastern", "latino hispanic")
# deepface's analyze() flattened by pandas (json_normalize), percentages as it writes them
DEEPFACE_ROWS = [
    # img_path, dominant_gender, gender.Woman, gender.Man, dominant_race, race.* (DEEPFACE_RACES order), age
    ("faces/1.jpg", "Woman", 99.0, 1.0, "middle eastern", (1.0, 2.0, 3.0, 4.0, 50.0, 40.0), 31),
    ("faces/2.jpg", "Man", 0.5, 99.5, "asian", (90.0, 2.0, 3.0, 4.0, 1.0, 0.0), 8),
    ("faces/3.jpg", "Man", 20.0, 80.0, "latino hispanic", (0.0, 0.0, 10.0, 20.0, 30.0, 40.0), 85),
    ("faces/4.jpg", "Woman", 60.0, 40.0, "white", (0.0, 0.0, 0.0, 100.0, 0.0, 0.0), 19.6),
]


def _deepface_frame(path_column: str = "img_path") -> pl.DataFrame:
    records = [
        {
            path_column: path, "dominant_gender": gender, "gender.Woman": woman, "gender.Man": man,
            "dominant_race": race, **{f"race.{name}": p for name, p in zip(DEEPFACE_RACES, probs, strict=True)},
            "age": age, "region.x": 10, "face_confidence": 0.9,
        }
        for path, gender, woman, man, race, probs, age in DEEPFACE_ROWS
    ]  # fmt: skip
    return pl.DataFrame(records, schema_overrides={"age": pl.Float64})


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(params=["csv", "parquet"])
def deepface_file(request, tmp_path):
    """The same deepface table as pandas' to_csv writes it (with its unnamed index column) and as a Parquet."""
    frame = _deepface_frame("img_path" if request.param == "csv" else "identity")
    if request.param == "parquet":
        path = tmp_path / "deepface.parquet"
        frame.write_parquet(path)
        return path
    path = tmp_path / "deepface.csv"
    frame.with_row_index("").write_csv(path)
    return path


def test_deepface_output_reads_into_our_schema_with_our_codes_and_probabilities(deepface_file):
    read = read_foreign_predictions(deepface_file)
    frame = read.frame
    assert frame.schema == pl.Schema(PREDICTION_FIELDS)
    assert frame["path"].to_list() == ["faces/1.jpg", "faces/2.jpg", "faces/3.jpg", "faces/4.jpg"]
    assert frame["pred_gender"].to_list() == [1, 0, 0, 1]
    assert frame["p_female"].to_list() == pytest.approx([0.99, 0.005, 0.2, 0.6])
    assert frame["pred_race"].to_list() == [4, 2, 4, 0]  # middle eastern, latino hispanic -> Others
    expected = {
        "p_white": [0.04, 0.04, 0.2, 1.0],
        "p_black": [0.03, 0.03, 0.1, 0.0],
        "p_asian": [0.01, 0.9, 0.0, 0.0],
        "p_indian": [0.02, 0.02, 0.0, 0.0],
        "p_others": [0.9, 0.01, 0.7, 0.0],
    }
    for column, values in expected.items():
        assert frame[column].to_list() == pytest.approx(values), column
    assert frame["pred_age"].to_list() == pytest.approx([31.0, 8.0, 85.0, 19.6])
    assert frame["model_name"].unique().to_list() == ["deepface"]
    assert frame["model_version"].unique().to_list() == ["unknown"]
    assert frame["face_index"].to_list() == [0, 0, 0, 0]
    for column in ("error", "age_low", "age_high", "true_age", "true_gender", "true_race", "box_x", "framing"):
        assert frame[column].null_count() == frame.height, column
    assert read.problems.height == 0
    assert read.attributes == ("gender", "race", "age")
    assert read.rows == 4


def test_the_labels_come_from_derived_columns(deepface_file):
    frame = read_foreign_predictions(deepface_file).frame
    assert frame["pred_gender_label"].cast(pl.String).to_list() == ["female", "male", "male", "female"]
    assert frame["pred_race_label"].cast(pl.String).to_list() == ["Others", "Asian", "Others", "White"]
    assert frame["pred_age_band"].cast(pl.String).to_list() == ["30-39", "3-9", "80+", "20-29"]  # 19.6 rounds to 20
    assert frame["true_gender_label"].null_count() == frame.height
    assert frame["gender_correct"].null_count() == frame.height


def test_percent_is_told_from_woman_and_man_together(tmp_path):
    """A reviewer's finding: deepface rows of confident men (gender.Woman 0.2-0.9 %, gender.Man 99.1-99.8 %) were
    read as P(female) 0.2-0.9, so most of them came out female."""
    text = "img_path,gender.Woman,gender.Man\n" + "".join(
        f"faces/{i}.jpg,{0.2 + 0.1 * i:.1f},{99.8 - 0.1 * i:.1f}\n" for i in range(8)
    )
    frame = read_foreign_predictions(_write(tmp_path, "men.csv", text)).frame
    assert frame["p_female"].to_list() == pytest.approx([(0.2 + 0.1 * i) / 100 for i in range(8)])
    assert frame["pred_gender_label"].cast(pl.String).to_list() == ["male"] * 8


def test_a_float32_probability_just_over_one_is_one_not_percent(tmp_path):
    """A reviewer's finding: one P(female) of 1.0000001 (float32 rounding) switched the whole column to percent,
    so every face came out male."""
    text = "path,p_female\n" + "".join(f"faces/{i}.jpg,{0.9 if i % 2 else 0.1}\n" for i in range(6))
    read = read_foreign_predictions(_write(tmp_path, "probs.csv", text + "faces/6.jpg,1.0000001\n"))
    assert read.frame["p_female"].to_list() == pytest.approx([0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 1.0])
    assert read.frame["pred_gender"].to_list() == [0, 1, 0, 1, 0, 1, 1]
    assert read.problems.height == 0 and read.summary["percent"] == []
    over = read_foreign_predictions(_write(tmp_path, "over.csv", text + "faces/6.jpg,1.2\n"))
    assert over.problems.select("line", "value", "reason").rows() == [(8, "1.2", "not a probability (0..1)")]


def test_the_summary_names_the_columns_read_in_percent(deepface_file):
    summary = read_foreign_predictions(deepface_file).summary
    races = [f"race.{name}" for name in ("white", "black", "asian", "indian", "middle eastern", "latino hispanic")]
    assert summary["percent"] == ["gender.Woman", "gender.Man", *races]


def test_the_summary_names_the_columns_read_and_the_race_mapping(deepface_file):
    summary = read_foreign_predictions(deepface_file).summary
    path_column = "img_path" if deepface_file.suffix == ".csv" else "identity"
    assert summary["columns"] == {
        "path": path_column, "gender": "dominant_gender", "p_female": "gender.Woman", "p_male": "gender.Man",
        "race": "dominant_race",
        "age": "age", "p_white": "race.white", "p_black": "race.black", "p_asian": "race.asian",
        "p_indian": "race.indian", "p_others": "race.middle eastern + race.latino hispanic",
    }  # fmt: skip
    assert summary["race_mapping"] == OTHER_RACES
    assert OTHER_RACES["middle eastern"] == OTHER_RACES["latino hispanic"] == "Others"
    assert summary["gender_one_is"] == "female" and summary["gender_numeric"] is False  # Woman / Man
    assert summary["problem_count"] == 0 and summary["problems_by_column"] == {}


INSIGHTFACE_CSV = "file,sex,age\nim/1.jpg,1,40\nim/2.jpg,0,22.5\nim/3.jpg,M,61\n"


def test_insightface_gender_one_is_male_when_told(tmp_path):
    path = _write(tmp_path, "buffalo.csv", INSIGHTFACE_CSV)
    read = read_foreign_predictions(path, gender_one_is="male", model_name="buffalo_l")
    frame = read.frame
    assert frame["pred_gender"].to_list() == [0, 1, 0]
    assert frame["pred_gender_label"].cast(pl.String).to_list() == ["male", "female", "male"]
    assert frame["pred_age"].to_list() == pytest.approx([40.0, 22.5, 61.0])
    assert frame["model_name"].unique().to_list() == ["buffalo_l"]
    assert read.attributes == ("gender", "age")
    assert read.summary["gender_one_is"] == "male" and read.summary["race_mapping"] is None
    assert read.summary["gender_numeric"] is True
    for column in ("pred_race", "pred_race_label", "p_female", *RACE_PROB_COLUMNS):
        assert frame[column].null_count() == 3, column


def test_a_numeric_gender_is_read_in_our_convention_unless_told(tmp_path):
    # no guess from the column's name (`sex`): 1 is female, ours, until gender_one_is says otherwise
    path = _write(tmp_path, "buffalo.csv", INSIGHTFACE_CSV)
    assert read_foreign_predictions(path).frame["pred_gender"].to_list() == [1, 0, 0]


def test_gender_one_is_male_flips_a_gender_written_as_a_float(tmp_path):
    """A reviewer's finding: 1.0 / 0.0 (a CSV column with a gap, as pandas writes it) were read in our convention
    whatever --gender-one-is said, so insightface's men came out women."""
    text = "file,sex\nim/1.jpg,1.0\nim/2.jpg,0.0\nim/3.jpg,\nim/4.jpg,F\n"
    read = read_foreign_predictions(_write(tmp_path, "floats.csv", text), gender_one_is="male")
    assert read.frame["pred_gender"].to_list() == [0, 1, None, 1]  # F is a word: female whatever the convention
    assert read.problems.height == 0


def test_gender_one_is_takes_only_female_or_male(tmp_path):
    path = _write(tmp_path, "buffalo.csv", INSIGHTFACE_CSV)
    with pytest.raises(FaceattrError, match=r"^--gender-one-is 'man': use female or male$"):
        read_foreign_predictions(path, gender_one_is="man")


def test_custom_columns_given_by_the_caller(tmp_path):
    text = "Picture;Guess;Group;Years;age\nq/a.png;F;black;33;5\nq/b.png;m;Indian;41;6\nq/c.png;woman;2;7;7\n"
    path = _write(tmp_path, "mine.csv", text)
    read = read_foreign_predictions(
        path, columns={"path": "picture", "gender": "Guess", "race": "Group", "age": "Years"}
    )
    frame = read.frame
    assert frame["pred_gender"].to_list() == [1, 0, 1]
    assert frame["pred_race"].to_list() == [1, 3, 2]
    assert frame["pred_age"].to_list() == [33.0, 41.0, 7.0]  # Years, not the true `age` column
    assert read.summary["columns"] == {"path": "Picture", "gender": "Guess", "race": "Group", "age": "Years"}


def test_none_leaves_an_attribute_out(deepface_file):
    read = read_foreign_predictions(deepface_file, columns={"race": None, "age": None})
    assert read.attributes == ("gender",)
    assert read.frame["pred_race"].null_count() == read.frame["pred_age"].null_count() == 4
    assert read.frame["p_others"].null_count() == 4  # the race probabilities go too
    assert read.frame["pred_gender"].to_list() == [1, 0, 0, 1]


def test_predicted_columns_win_over_true_looking_ones(tmp_path):
    path = _write(tmp_path, "own.csv", "path,gender,pred_gender,age,pred_age\na.jpg,male,female,30,42\n")
    frame = read_foreign_predictions(path).frame
    assert (frame["pred_gender"][0], frame["pred_age"][0]) == (1, 42.0)


def test_probabilities_alone_give_the_predicted_codes(tmp_path):
    text = (
        "image,gender.Man,race.white,race.black,race.asian,race.indian,race.others\n"
        "a.jpg,0.3,0.1,0.6,0.1,0.1,0.1\n"
        "b.jpg,0.9,0.5,0.1,0.1,0.2,0.1\n"
    )
    frame = read_foreign_predictions(_write(tmp_path, "probs.csv", text)).frame
    assert frame["p_female"].to_list() == pytest.approx([0.7, 0.1])  # 1 - P(man); fractions stay as they are
    assert frame["pred_gender"].to_list() == [1, 0]  # p_female >= 0.5, as predict decides
    assert frame["pred_race"].to_list() == [1, 0]  # the most probable of our five
    assert frame["p_black"].to_list() == pytest.approx([0.6, 0.1])


def test_unreadable_values_are_null_and_counted_with_their_lines(tmp_path):
    text = (
        "img_path,dominant_gender,gender.Woman,dominant_race,age\n"  # line 1
        "a.jpg,Woman,99,white,30\n"  # 2
        "b.jpg,x,abc,martian,abc\n"  # 3
        "\n"  # 4: blank, not a row
        'c.jpg,Man,1,"latino\nhispanic",-3\n'  # 5-6: a quoted field over two lines
        ",Man,1,white,20\n"  # 7: no path
        "d.jpg,Man,150,asian,200\n"  # 8
        "e.jpg,Man\n"  # 9: too few fields
        "f.jpg,,,,\n"  # 10: nothing predicted
        "g.jpg,man,,Asian,inf\n"  # 11
    )
    read = read_foreign_predictions(_write(tmp_path, "bad.csv", text))
    frame = read.frame
    assert frame["path"].to_list() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "f.jpg", "g.jpg"]
    assert frame["pred_gender"].to_list() == [1, None, 0, 0, None, 0]
    assert frame["p_female"].to_list() == pytest.approx([0.99, None, 0.01, None, None, None])  # 150%: a problem
    assert frame["pred_race"].to_list() == [0, None, 4, 2, None, 2]
    assert frame["pred_age"].to_list() == [30.0, None, None, None, None, None]
    assert frame["error"].to_list() == [None, NO_PREDICTION, None, None, NO_PREDICTION, None]
    assert read.rows == 8  # the one with too few fields and the one without a path included
    assert read.problems.rows() == [
        (3, "age", "abc", "not a number of years (nor an age bin such as 20-29)"),
        (3, "dominant_gender", "x", "'x' is not one of male, female, m, f, man, woman, 0, 1"),
        (3, "dominant_race", "martian", "'martian' is not one of White, Black, Asian, Indian, Others (or 0..4), "
         "nor of white, black, asian, indian, east asian, southeast asian, latino hispanic, middle eastern"),
        (3, "gender.Woman", "abc", "not a number"),
        (5, "age", "-3", "negative age"),
        (7, "img_path", None, "no path: row not read"),
        (8, "age", "200", "age above 120"),
        (8, "gender.Woman", "150", "not a probability (0..100)"),
        (9, None, None, "2 fields where the header has 5: row not read"),
        (11, "age", "inf", "not a number of years (nor an age bin such as 20-29)"),
    ]  # fmt: skip
    by_column = read.summary["problems_by_column"]
    assert {column: (entry["count"], entry["lines"]) for column, entry in by_column.items()} == {
        "age": (4, [3, 5, 8, 11]),
        "dominant_gender": (1, [3]),
        "dominant_race": (1, [3]),
        "gender.Woman": (2, [3, 8]),
        "img_path": (1, [7]),
        "(row)": (1, [9]),
    }
    assert list(by_column) == ["age", "dominant_gender", "dominant_race", "gender.Woman", "img_path", "(row)"]
    # the reasons, most frequent first (then alphabetical): what a user needs to mend the file
    assert by_column["age"]["reasons"] == {
        "not a number of years (nor an age bin such as 20-29)": 2,
        "age above 120": 1,
        "negative age": 1,
    }
    assert by_column["gender.Woman"]["reasons"] == {"not a number": 1, "not a probability (0..100)": 1}
    assert by_column["(row)"]["reasons"] == {"2 fields where the header has 5: row not read": 1}


def test_problem_lines_in_a_parquet_are_row_numbers(tmp_path):
    path = tmp_path / "rows.parquet"
    pl.DataFrame(
        {"filename": ["a", "b", "c"], "race": ["White", "x", None], "age": [1.0, float("nan"), 3.0]}
    ).write_parquet(path)
    read = read_foreign_predictions(path)
    assert read.problems.select("line", "column", "value").rows() == [(2, "race", "x")]
    assert read.frame["pred_age"].to_list() == [1.0, None, 3.0]  # NaN is a missing value, not a problem
    assert read.frame["pred_race_label"].cast(pl.String).to_list() == ["White", None, None]


def test_several_faces_of_one_photo_are_numbered(tmp_path):
    frame = read_foreign_predictions(_write(tmp_path, "f.csv", "path,age\nx.jpg,3\ny.jpg,4\nx.jpg,5\n")).frame
    assert frame["face_index"].to_list() == [0, 0, 1]


def test_a_table_without_a_path_column_is_an_error_naming_columns_and_spellings(tmp_path):
    path = _write(tmp_path, "nopath.csv", "name,age\na.jpg,3\n")
    message = (
        r"nopath\.csv: no column names the images \(columns: name, age; accepted: path, file, filename, file_name, "
        r"image, img, image_path, img_path, identity, face_name_align\)$"
    )
    with pytest.raises(FaceattrError, match=message):
        read_foreign_predictions(path)


def test_a_table_without_predictions_is_an_error_naming_columns_and_spellings(tmp_path):
    path = _write(tmp_path, "nothing.csv", "file,score\na.jpg,3\n")
    message = (
        r"nothing\.csv: no predicted gender, race or age column \(columns: file, score; accepted: "
        r"gender: dominant_gender, pred_gender, predicted_gender, gender, sex; "
        r"race: dominant_race, pred_race, predicted_race, race, ethnicity; "
        r"age: pred_age, predicted_age, apparent_age, age\)$"
    )
    with pytest.raises(FaceattrError, match=message):
        read_foreign_predictions(path)


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        (
            "file,age\na,1\n",
            {"sexx": "age"},
            r"^columns: unknown key 'sexx' \(keys: path, gender, p_female, p_male, race, age\)$",
        ),
        ("file,age\na,1\n", {"gender": "sex"}, r"t\.csv: no column 'sex' \(given for gender; columns: file, age\)$"),
        ("", None, r"t\.csv: an empty file$"),
        ("file,age,age\na,1,2\n", None, r"t\.csv: a column name repeats in the header \(file, age, age\)$"),
    ],
)
def test_bad_tables_and_options_are_one_line_errors(tmp_path, text, columns, message):
    with pytest.raises(FaceattrError, match=message):
        read_foreign_predictions(_write(tmp_path, "t.csv", text), columns)


def test_missing_corrupt_and_binary_files_are_one_line_errors(tmp_path):
    with pytest.raises(FaceattrError, match=r"missing\.csv: no such file$"):
        read_foreign_predictions(tmp_path / "missing.csv")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    with pytest.raises(FaceattrError, match=r"corrupt\.parquet: not a readable Parquet file \("):
        read_foreign_predictions(corrupt)
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"path\n\xff\xfe")
    with pytest.raises(FaceattrError, match=r"x\.bin: not UTF-8 text \(byte 5\)$"):
        read_foreign_predictions(binary)


def test_is_own_predictions_tells_predict_output_from_other_tables(tmp_path, deepface_file):
    own = tmp_path / "predictions.parquet"
    read_foreign_predictions(deepface_file).frame.write_parquet(own)  # every column of our schema
    csv_copy = _write(tmp_path, "ours.csv", "path,error,model_name,model_version\na,,m,1\n")
    assert is_own_predictions(own)
    assert not is_own_predictions(deepface_file)
    assert not is_own_predictions(csv_copy)  # our columns, but not a Parquet
    assert not is_own_predictions(tmp_path / "missing.parquet")


def test_fairface_classifier_output_reads_its_age_bins(tmp_path):
    """FairFace's own classifier (its predict.py: face_name_align, race, race4, gender, age, ...) writes its ages as
    bins ("20-29", "more than 70"): each was "not a number of years", 500 ages left empty. A bin is now the
    prediction (pred_age_low / pred_age_high, pred_age null); a bad one is a problem that says which."""
    text = (
        "face_name_align,race,race4,gender,age\n"
        "a.jpg,East Asian,Asian,Male,20-29\n"  # 2
        "b.jpg,Black,Black,Female,more than 70\n"  # 3
        "c.jpg,Indian,Indian,Male,50-40\n"  # 4: reversed
        "d.jpg,White,White,Female,x\n"  # 5
        "e.jpg,White,White,Female,33.5\n"  # 6: years still read as years
    )
    read = read_foreign_predictions(_write(tmp_path, "fairface_out.csv", text))
    frame = read.frame
    assert read.columns["path"] == "face_name_align" and read.attributes == ("gender", "race", "age")
    assert frame["pred_age_low"].to_list() == [20, 70, None, None, None]
    assert frame["pred_age_high"].to_list() == [29, 120, None, None, None]
    assert frame["pred_age"].to_list() == [None, None, None, None, 33.5]
    assert frame["pred_race"].to_list() == [2, 1, 3, 0, 0] and frame["error"].null_count() == 5
    assert read.problems.rows() == [
        (4, "age", "50-40", "an age bin outside 0..120"),
        (5, "age", "x", "not a number of years (nor an age bin such as 20-29)"),
    ]
    out = io.StringIO()
    summaries_runs.foreign_table(Console(file=out, width=300), read.summary)
    assert "age: 2 (line 4, 5); 1: an age bin outside 0..120; 1: not a number of years" in out.getvalue()
    assert "age: 2 (lines 4, 5) <span class='muted'>1 an age bin outside 0..120 / 1 not a number" in foreign_html(
        read.summary
    )


def test_fairface_classifier_probability_vectors_become_our_probabilities(tmp_path):
    """FairFace's predict.py writes race_scores_fair (its seven classes) and gender_scores_fair (male, female) as
    NumPy prints an array, wrapped over two lines inside quotes: they were not read, so its runs had no P(female), no
    race probabilities and no calibration. Each now reads as a column per class, summed into ours."""
    header = "face_name_align,race,race4,gender,age,race_scores_fair,race_scores_fair_4,gender_scores_fair\n"
    text = header + (
        # White, Black, Latino, East Asian, Southeast Asian, Indian, Middle Eastern
        'a.jpg,East Asian,Asian,Female,30-39,"[1.0e-02 2.0e-02 3.0e-02 6.0e-01\n 2.0e-01 4.0e-02 1.0e-01]",'
        "[0.1 0.1 0.7 0.1],[2.5e-01 7.5e-01]\n"  # line 2 (its vector wraps onto 3)
        'b.jpg,Latino_Hispanic,White,Male,20-29,"[0.05 0.05 0.5 0.05 0.05 0.05 0.25]",[0.7 0.1 0.1 0.1],[0.9 0.1]\n'
        'c.jpg,White,White,Male,20-29,"[0.5 0.5]",[1 0 0 0],[0.8 0.2 0.0]\n'  # 5: 2 races, 3 genders
        'd.jpg,White,White,Male,20-29,"[0.9 abc 0 0 0 0 0.1]",[1 0 0 0],0.6\n'  # 6: abc; no brackets
    )
    read = read_foreign_predictions(_write(tmp_path, "fairface_out.csv", text))
    frame = read.frame
    assert read.rows == 4  # a vector's problem is no row of its own
    assert frame["p_female"].to_list() == pytest.approx([0.75, 0.1, None, None])
    assert frame["pred_gender"].to_list() == [1, 0, 0, 0]  # from the gender column, as before
    probabilities = frame.select(RACE_PROB_COLUMNS).rows()
    assert probabilities[0] == pytest.approx((0.01, 0.02, 0.8, 0.04, 0.13))  # asian = east + southeast; others
    assert probabilities[1] == pytest.approx((0.05, 0.05, 0.1, 0.05, 0.75))  # = latino + middle eastern
    assert probabilities[2] == (None,) * 5
    assert probabilities[3][0] == pytest.approx(0.9) and probabilities[3][1] is None
    assert read.columns["p_female"] == "gender_scores_fair[female]"
    assert read.columns["p_asian"] == "race_scores_fair[east asian] + race_scores_fair[southeast asian]"
    assert read.columns["p_others"] == "race_scores_fair[latino hispanic] + race_scores_fair[middle eastern]"
    shown = "p_white … p_others <- race_scores_fair (7 classes summed into our 5)"  # not five entries of its classes
    out = io.StringIO()
    summaries_runs.foreign_table(Console(file=out, width=400), read.summary)
    assert shown in out.getvalue() and "race_scores_fair[white]" not in out.getvalue()
    assert "p_white … p_others ← <code>race_scores_fair (7 classes summed into our 5)</code>" in foreign_html(
        read.summary
    )
    races = "white, black, latino hispanic, east asian, southeast asian, indian, middle eastern"
    assert read.problems.rows() == [
        (5, "gender_scores_fair", "[0.8 0.2 0.0]", "not a bracketed list of 2 numbers (male, female)"),
        (5, "race_scores_fair", "[0.5 0.5]", f"not a bracketed list of 7 numbers ({races})"),
        (6, "gender_scores_fair", "0.6", "not a bracketed list of 2 numbers (male, female)"),
        (6, "race_scores_fair[black]", "abc", "not a number"),
    ]


def test_a_parquet_with_probability_lists_reads_like_the_csv(tmp_path):
    path = tmp_path / "fairface_out.parquet"
    pl.DataFrame({
        "face_name_align": ["a.jpg", "b.jpg"],
        "race_scores_fair": [[0.1, 0.1, 0.1, 0.4, 0.1, 0.1, 0.1], [0.3, 0.1]],
        "gender_scores_fair": [[0.2, 0.8], [0.6, 0.4]],
    }).write_parquet(path)  # fmt: skip
    read = read_foreign_predictions(path)
    assert read.rows == 2
    out = io.StringIO()
    summaries_runs.foreign_table(Console(file=out, width=300), read.summary)
    assert "(parquet, 2 rows)" in out.getvalue()
    pl.read_parquet(path).head(1).write_parquet(tmp_path / "one.parquet")
    assert "(parquet, 1 row)" in foreign_html(read_foreign_predictions(tmp_path / "one.parquet").summary)
    assert read.frame["p_female"].to_list() == pytest.approx([0.8, 0.4])
    assert read.frame["pred_gender"].to_list() == [1, 0]  # no gender column: P(female) >= 0.5
    assert read.frame["pred_race"].to_list() == [2, None]  # no race column: the most probable of ours (Asian 0.5)
    assert [(line, column) for line, column, *_ in read.problems.rows()] == [(2, "race_scores_fair")]


def test_a_row_without_race_probabilities_has_no_race_not_white(tmp_path):
    """deepface's race columns empty on a row (a face it skipped) summed to 0 each, and the most probable of five
    zeros was White: 0 predicted White for each such face, and a row empty throughout was no "no prediction"."""
    text = (
        "img,race.white,race.black,race.asian,race.indian,race.middle eastern,race.latino hispanic,age\n"
        "a.jpg,10,20,30,40,0,0,30\n"
        "b.jpg,,,,,,,40\n"
        "c.jpg,,,,,,,\n"
    )
    frame = read_foreign_predictions(_write(tmp_path, "deepface.csv", text)).frame
    assert frame["pred_race"].to_list() == [3, None, None]
    assert frame.select(RACE_PROB_COLUMNS).rows()[1:] == [(None,) * 5] * 2
    assert frame["error"].to_list() == [None, None, NO_PREDICTION]
