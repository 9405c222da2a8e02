"""data.label_files: every format read as it ships (fixtures written here; no dataset downloaded), the exact codes,
the line and reason of each unreadable value, matching by path and by name, the counts, and --labels through
`predict` and `report`."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest
from conftest import make_faces
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.data import tables
from faceattr_batch.data.label_files import (
    FAIRFACE_RACE_MAP,
    PROBLEMS_KEPT,
    attach_labels,
    detect_format,
    label_source,
    load_labels,
    match_labels,
    read_label_file,
)
from faceattr_batch.errors import FaceattrError
from faceattr_batch.pipelines.index import IndexOptions
from faceattr_batch.pipelines.index import run as index_run

CODES = ["true_age", "true_gender", "true_race"]
GENDER_REASON = "'x' is not one of male, female (or 0..1)"


def _codes(frame: pl.DataFrame, key: str = "key") -> dict[str, tuple]:
    return {row[0]: row[1:] for row in frame.select(key, *CODES).iter_rows()}


def _problems(table) -> list[tuple]:
    return [tuple(row.values()) for row in table.problems.to_dicts()]


def test_a_csv_with_string_labels_and_bad_rows(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "path,Gender,RACE,age,skin_tone,note\n"  # 1
        "a.jpg,Female,asian,34,3,\n"  # 2
        "b.jpg,x,martian,abc,4,\n"  # 3
        "\n"  # 4: a blank line is no row but still a line
        "c.jpg, M ,0,-3,2.5,\n"  # 5
        'e.jpg,f,Others,130,1,"two\nlines"\n'  # 6-7: a quoted field across two lines
        "f.jpg,F,4,7.6,1,ok\n"  # 8
        "g.jpg,1,White\n"  # 9: too few fields
        "h.jpg,0,1,,,\n"  # 10: empty values are missing labels, not problems
    )
    table = read_label_file(path)
    assert (table.format, table.key, table.rows) == ("csv", "path", 7)
    assert _codes(table.frame) == {
        "a.jpg": (34, 1, 2),
        "b.jpg": (None, None, None),
        "c.jpg": (None, 0, 0),
        "e.jpg": (None, 1, 4),
        "f.jpg": (8, 1, 4),  # 7.6 years rounded
        "h.jpg": (None, 0, 1),
    }
    assert _problems(table) == [
        (3, "age", "abc", "not a number of years (nor an age bin such as 20-29)"),
        (3, "gender", "x", GENDER_REASON),
        (3, "race", "martian", "'martian' is not one of White, Black, Asian, Indian, Others (or 0..4)"),
        (5, "age", "-3", "negative age"),
        (6, "age", "130", "age above 120"),
        (9, None, None, "3 fields where the header has 6: row not read"),
    ]
    assert table.extras == ("skin_tone", "note")
    assert table.frame.schema["skin_tone"] == pl.Float64 and table.frame.schema["true_gender"] == pl.Int8
    assert table.frame.filter(pl.col("key") == "e.jpg")["note"].item() == "two\nlines"


def test_parquet_labels_by_file_name_with_row_numbers(tmp_path):
    path = tmp_path / "labels.parquet"
    pl.DataFrame(
        {
            "file": ["a.jpg", "b.jpg", "c.jpg", "a.jpg"],
            "gender": [0, 1, 2, 1],
            "race": [1.0, None, 3.0, 0.0],  # floats, as pandas writes a column with a missing value
            "age": [5.0, float("nan"), 121.0, 9.0],
            "error": ["x", None, None, None],  # a predictions column's name: kept as label_error
        }
    ).write_parquet(path)
    table = read_label_file(path)
    assert (table.format, table.key, table.extras) == ("parquet", "file", ("label_error",))
    assert _problems(table) == [
        (3, "age", "121", "age above 120"),
        (3, "gender", "2", "'2' is not one of male, female (or 0..1)"),
    ]
    matched = match_labels(table, ["/data/a.jpg", "/data/b.jpg", "/data/c.jpg"])
    assert _codes(matched.frame, "path") == {
        "/data/a.jpg": (5, 0, 1),  # the first row naming it
        "/data/b.jpg": (None, 1, None),
        "/data/c.jpg": (None, None, 3),
    }
    assert matched.summary["problems"][-1] == {
        "line": 4, "column": "file", "value": "a.jpg", "reason": "names the same image as line 1 (that line is used)"
    }  # fmt: skip


def test_json_lines_with_bad_lines(tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [
        {"path": "a.jpg", "gender": 1, "race": "Black", "age": 30.0, "source": "web"},
        None,  # a blank line
        {"path": "b.jpg", "gender": "x", "age": "31", "source": "studio"},
        [1, 2],
        "{not json",
        {"path": "sub/c.jpg", "gender": "male", "race": 4},
    ]
    path.write_text("\n".join("" if r is None else r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    table = read_label_file(path)
    assert table.format == "jsonl" and table.rows == 5
    assert _codes(table.frame) == {"a.jpg": (30, 1, 1), "b.jpg": (31, None, None), "sub/c.jpg": (None, 0, 4)}
    problems = _problems(table)
    assert problems[0] == (3, "gender", "x", GENDER_REASON)
    assert [p[0] for p in problems[1:]] == [4, 5] and all(p[3].endswith("row not read") for p in problems[1:])
    assert table.frame["source"].to_list() == ["web", "studio", None]


CELEBA_NAMES = "5_o_Clock_Shadow Arched_Eyebrows Eyeglasses Male Pale_Skin Young".split()


def test_celeba_attribute_file(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(
        "4\n"
        + " ".join(CELEBA_NAMES)
        + "\n"
        + "000001.jpg -1  1 -1 -1  1  1\n"  # 3: female
        + "000002.jpg -1 -1  1  1 -1  1\n"  # 4: male
        + "000003.jpg  1  1  1  0 -1 -1\n"  # 5: Male 0 is neither
        + "000004.jpg  1  1\n"  # 6: too few values
    )
    assert detect_format(path) == "celeba"
    table = read_label_file(path)
    assert (table.key, table.rows) == ("file", 4)
    assert _codes(table.frame) == {
        "000001.jpg": (None, 1, None),
        "000002.jpg": (None, 0, None),
        "000003.jpg": (None, None, None),
    }
    assert table.extras == tuple(n for n in CELEBA_NAMES if n != "Male")  # Male became the gender
    assert table.frame.schema["Eyeglasses"] == pl.Boolean
    assert table.frame["Eyeglasses"].to_list() == [False, True, True]
    assert _problems(table) == [
        (5, "Male", "0", "not 1 or -1"),
        (6, None, "000004.jpg", "2 values where the header names 6: row not read"),
    ]


def test_fairface_labels_csv(tmp_path):
    path = tmp_path / "fairface_label_val.csv"
    path.write_text(
        "file,age,gender,race,service_test\n"
        "val/1.jpg,3-9,Male,East Asian,True\n"
        "val/2.jpg,50-59,Female,Southeast Asian,False\n"
        "val/3.jpg,more than 70,Female,Latino_Hispanic,True\n"
        "val/4.jpg,20-29,Male,Middle Eastern,False\n"
        "val/5.jpg,0-2,Female,Indian,False\n"
        "val/6.jpg,20-29,Male,Martian,False\n"
        "val/7.jpg,twenty,Male,White,False\n"
    )
    assert detect_format(path) == "fairface"
    table = read_label_file(path)
    frame = table.frame
    assert frame["true_age"].null_count() == frame.height  # a bin is no age in years
    assert frame.select("true_age_low", "true_age_high").rows() == [
        (3, 9), (50, 59), (70, 120), (20, 29), (0, 2), (20, 29), (None, None)
    ]  # fmt: skip
    assert frame["true_race"].to_list() == [2, 2, 4, 4, 3, None, 0]
    assert frame["true_gender"].to_list() == [0, 1, 1, 0, 1, 0, 0]
    assert frame["fairface_race"].to_list()[:2] == ["East Asian", "Southeast Asian"]
    assert frame.schema["service_test"] == pl.Boolean
    assert [(p[0], p[1]) for p in _problems(table)] == [(7, "race"), (8, "age")]
    matched = match_labels(table, ["/d/fairface/val/1.jpg", "/d/fairface/train/1.jpg"])
    assert matched.summary["race_mapping"] == FAIRFACE_RACE_MAP and FAIRFACE_RACE_MAP["East Asian"] == "Asian"
    assert matched.frame.select("true_age_low", "fairface_race").row(0) == (3, "East Asian")
    coded = tmp_path / "coded.csv"  # FairFace's columns holding race codes: a plain CSV, no FairFace mapping
    coded.write_text("file,age,gender,race\nx.jpg,30,1,2\n")
    assert detect_format(coded) == "csv" and read_label_file(coded).extras == ()
    # a reviewer's finding: the plain CSV of predict.md, ages in years and our race names, was called FairFace's
    years = tmp_path / "years.csv"
    years.write_text("file,age,gender,race\n100_1_0_x.jpg,100,female,White\n")
    assert detect_format(years) == "csv" and read_label_file(years).frame["true_age"].to_list() == [100]


def test_fairface_with_columns_of_its_own_is_still_fairface(tmp_path):
    """A reviewer's finding: a skin-tone column (or pandas' index) added to FairFace's CSV made it a plain CSV, so
    its seven races were unreadable problems."""
    path = tmp_path / "fairface_plus.csv"
    path.write_text(
        ",file,age,gender,race,service_test,skin_tone\n"
        "0,train/1.jpg,3-9,Male,East Asian,True,3\n"
        "1,train/2.jpg,more than 70,Female,Latino_Hispanic,False,5\n"
    )
    assert detect_format(path) == "fairface"
    table = read_label_file(path)
    assert table.frame["true_race"].to_list() == [2, 4] and table.problems.height == 0
    assert table.frame["skin_tone"].to_list() == [3, 5] and "fairface_race" in table.frame.columns
    assert table.frame["column_0"].to_list() == [0, 1]  # pandas' index: its empty name given by position
    years = tmp_path / "years.csv"  # FairFace's columns and one more, ages in years: a plain CSV
    years.write_text("file,age,gender,race,skin_tone\nx.jpg,30,male,White,3\n")
    assert detect_format(years) == "csv"


def test_a_label_column_named_line_is_kept_under_another_name(tmp_path):
    """A reviewer's finding: a column `line` crashed a Parquet (a duplicate column) and vanished from a CSV: the
    row numbers were written over it."""
    frame = pl.DataFrame({"path": ["a.jpg", "b.jpg"], "age": [20, 30], "line": ["front", "back"]})
    frame.write_parquet(tmp_path / "labels.parquet")
    frame.write_csv(tmp_path / "labels.csv")
    (tmp_path / "labels.jsonl").write_text("".join(f"{row}\n" for row in frame.write_ndjson().splitlines()))
    for name in ("labels.parquet", "labels.csv", "labels.jsonl"):
        table = read_label_file(tmp_path / name)
        assert table.extras == ("label_line",), name
        matched = match_labels(table, ["/d/b.jpg", "/d/a.jpg"])
        assert matched.frame.select("true_age", "label_line").rows() == [(30, "back"), (20, "front")], name


def test_label_ages_round_halves_up_as_predicted_ages_do(tmp_path):
    path = tmp_path / "half.csv"
    path.write_text("path,age\na.jpg,20.5\nb.jpg,21.5\nc.jpg,2.5\nd.jpg,2.49\ne.jpg,120.5\n")
    table = read_label_file(path)
    assert table.frame["true_age"].to_list() == [21, 22, 3, 2, None]  # polars' round gave 20, 22, 2 (half to even)
    assert _problems(table) == [(6, "age", "120.5", "age above 120")]


def test_windows_separators_match_and_a_byte_escape_stays_one(tmp_path):
    """A reviewer's finding: `train\\1.jpg` (a CSV written on Windows) matched nothing, and nothing said why."""
    labels = tmp_path / "labels.csv"
    labels.write_text("path,age\ntrain\\1.jpg,20\nval\\sub\\2.jpg,30\ncaf\\xe9.jpg,40\n")
    inputs = ["/d/train/1.jpg", "/d/val/sub/2.jpg", "/d/caf\\xe9.jpg", "/d/caf/xe9.jpg"]
    matched = load_labels(labels, inputs)
    # caf\xe9.jpg is display_path's text of a name with the byte 0xE9, not a folder caf holding xe9.jpg
    assert matched.frame["true_age"].to_list() == [20, 30, 40, None]


def test_json_lines_whose_first_line_is_no_object_read_the_rest(tmp_path):
    """A reviewer's finding: a first line `[1]` made the whole file "a JSON array", against the rule that a line that
    is not an object is a problem and the rest is read."""
    path = tmp_path / "labels.jsonl"
    path.write_text('[1]\n{"path": "a.jpg", "age": 20}\n')
    table = read_label_file(path)
    assert table.format == "jsonl" and _codes(table.frame)["a.jpg"] == (20, None, None)
    assert [(line, reason.split(" (")[0]) for line, _, _, reason in _problems(table)] == [(1, "not a JSON object")]
    path.write_text('[\n{"path": "a.jpg", "age": 20}\n]\n')  # a pretty-printed array is still one
    with pytest.raises(FaceattrError, match="a JSON array; write JSON Lines"):
        read_label_file(path)


def test_matching_counts_paths_and_ambiguous_names(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    inputs = [str(tmp_path / "link" / "a.jpg"), "/d/train/1.jpg", "/d/val/1.jpg", "/d/x11.jpg", "/d/y.jpg"]
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,age\n{real / 'a.jpg'},1\ntrain/1.jpg,2\n./val/1.jpg,3\n1.jpg,4\nghost.jpg,5\n")
    with pytest.raises(FaceattrError, match=r"1\.jpg \(line 5\): /d/train/1\.jpg, /d/val/1\.jpg; 1 in all"):
        load_labels(labels, inputs)
    labels.write_text(f"path,age\n{real / 'a.jpg'},1\ntrain/1.jpg,2\n./val/1.jpg,3\n11.jpg,4\nghost.jpg,5\n")
    matched = load_labels(labels, inputs)
    # an absolute path through a symlinked folder; relative paths at a folder boundary ("11.jpg" is not x11.jpg)
    assert matched.frame["true_age"].to_list() == [1, 2, 3, None, None]
    summary = matched.summary
    assert (summary["matched_inputs"], summary["inputs_without_labels"], summary["labels_not_in_inputs"]) == (3, 2, 2)
    assert summary["rows"] == 5 and summary["problem_count"] == 0


def test_user_errors_are_one_line(tmp_path):
    cases = {
        "missing.csv": None,
        "binary.bin": b"\x00\x01PK",
        "nokey.csv": b"name,age\na,1\n",
        "array.json": b'[{"path": "a.jpg"}]',
        "empty.csv": b"\n\n",
        "commas.csv": b",,,\n",
        "twice.csv": b"Path,path,age\na.jpg,b.jpg,1\n",
        "latin1.csv": b"path,age\ncaf\xe9/1.jpg,20\n",
        "folder": None,
    }
    (tmp_path / "folder").mkdir()
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    expected = {
        "missing.csv": "no such file",
        "binary.bin": "not a labels file this tool reads",
        "nokey.csv": r"no 'path' or 'file' column \(columns: name, age\)",
        "array.json": "a JSON array; write JSON Lines",
        "empty.csv": "an empty file",
        "commas.csv": "no header row",
        "twice.csv": "columns Path, path are all 'path' here: keep one",
        "latin1.csv": r"latin1.csv: not UTF-8 text \(byte 12\); save it as UTF-8$",
        "folder": r"folder: a folder; give the labels file$",
    }
    for name, message in expected.items():
        with pytest.raises(FaceattrError, match=message) as caught:
            read_label_file(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_problems_are_capped_with_their_total_and_the_source_follows_the_content(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,gender\n" + "".join(f"{i}.jpg,x\n" for i in range(30)))
    summary = load_labels(path, ["/d/0.jpg"]).summary
    assert summary["problem_count"] == 30 and len(summary["problems"]) == PROBLEMS_KEPT
    assert [p["line"] for p in summary["problems"]] == list(range(2, 2 + PROBLEMS_KEPT))
    first = label_source(read_label_file(path))
    assert first == label_source(read_label_file(path)) and first.startswith(f"csv:{path.resolve()} sha256:")
    path.write_text("file,gender\n0.jpg,f\n")
    assert label_source(read_label_file(path)) != first
    # an index too (a reviewer's finding: by its path alone, a resume mixed its old and rewritten labels)
    make_faces(tmp_path / "faces", 3)
    index = tmp_path / "index.parquet"
    index_run(IndexOptions(root=tmp_path / "faces"), index)
    before = label_source(read_label_file(index))
    assert before.startswith(f"index:{index.resolve()} sha256:")
    metadata = pl.read_parquet_metadata(index)
    pl.read_parquet(index).with_columns(pl.col("age") + 10).write_parquet(index, metadata=metadata)
    assert label_source(read_label_file(index)) != before


def test_attach_labels_replaces_codes_adds_extras_and_skips_group_photos(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,gender,race,age,source\nsolo.jpg,female,Black,40,web\ngroup.jpg,male,White,30,studio\n")
    predictions = pl.DataFrame(
        {"path": ["/p/solo.jpg", "/p/group.jpg", "/p/group.jpg", "/p/other.jpg"], "pred_age": [1.0, 2.0, 3.0, 4.0]}
    ).with_columns(pl.lit(5, pl.Int16).alias("true_age"), pl.lit(0, pl.Int8).alias("true_gender"),
                   pl.lit(0, pl.Int8).alias("true_race"), pl.lit("male").alias("true_gender_label"))  # fmt: skip
    matched = load_labels(path, predictions["path"].unique(maintain_order=True).to_list())
    joined = attach_labels(predictions, matched)
    assert joined.columns[: predictions.width] == predictions.columns
    assert _codes(joined.unique("path", maintain_order=True), "path") == {
        "/p/solo.jpg": (40, 1, 1),
        "/p/group.jpg": (None, None, None),  # two faces: a label describes one person
        "/p/other.jpg": (None, None, None),  # the file wins: no row, no label
    }
    assert joined["true_gender_label"].to_list() == ["female", None, None, None]
    assert joined["source"].to_list() == ["web", "studio", "studio", None]


# --- through the CLI -------------------------------------------------------------------------------------------


def test_predict_and_report_with_a_labels_csv(tmp_path, tiny_attr_model):
    runner = CliRunner()
    names = [p.name for p in make_faces(tmp_path / "in", 6)]
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,gender,race,age,source\n"
        f"{names[0]},female,Black,41,web\n"
        f"{names[1]},m,asian,12,studio\n"
        f"{names[2]},x,White,30,web\n"  # line 4
        f"{names[3]},1,4,abc,web\n"  # line 5
        f"{names[4]},0,0,-3,studio\n"  # line 6
        "ghost.jpg,f,1,20,web\n"  # no such input
    )
    out = tmp_path / "out.parquet"
    args = ["predict", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_attr_model), "--workers", "0"]
    args += ["--runtime", "torch", "--faces", "chips", "--labels", str(labels)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    written = pl.read_parquet(out).with_columns(pl.col("path").str.split("/").list.last())
    assert _codes(written, "path") == {
        names[0]: (41, 1, 1),
        names[1]: (12, 0, 2),
        names[2]: (30, None, 0),
        names[3]: (None, 1, 4),
        names[4]: (None, 0, 0),
        names[5]: (None, None, None),  # its name's labels are not used: the file wins
    }
    assert written.filter(pl.col("path") == names[0])["true_race_label"].item() == "Black"
    found = summary["labels"]
    assert [(p["line"], p["column"]) for p in found["problems"]] == [(4, "gender"), (5, "age"), (6, "age")]
    assert (found["matched_inputs"], found["inputs_without_labels"], found["labels_not_in_inputs"]) == (5, 1, 1)
    assert summary["labelled"] == 5 and summary["settings"]["labels"].startswith("csv:")
    shown = runner.invoke(app, [*args, "-o", str(tmp_path / "again.parquet")])
    assert "3 values not read" in shown.stdout and f"line 4, gender: {GENDER_REASON}" in shown.stdout
    assert "5 images matched to a row, 1 to none; 1 of 6 rows name no input" in " ".join(shown.stdout.split())

    fairface = tmp_path / "fairface_label_val.csv"
    fairface.write_text(
        "file,age,gender,race,service_test\n"
        + "".join(f"in/{name},20-29,Female,Southeast Asian,True\n" for name in names[:4])
        + f"in/{names[4]},3-9,Male,Martian,False\n"
    )
    report = runner.invoke(app, ["report", str(out), "--report", str(tmp_path / "rep"), "--labels", str(fairface)])
    assert report.exit_code == 0, report.output
    assert "1 value not read" in report.stdout and "Southeast Asian -> Asian" in report.stdout
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["labels"]["format"] == "fairface" and saved["labels"]["race_mapping"] == FAIRFACE_RACE_MAP
    assert saved["labels"]["problems"][0]["line"] == 6 and saved["labelled"] == 5
    assert saved["overall"]["n_race"] == 4 and saved["overall"]["n_age"] == 0  # bins are not years


def test_codes_written_as_whole_floats_and_a_column_named_pos(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("path,gender,race,age,pos\na.jpg,1.0,2.0,25.0,front\nb.jpg,0,,30,side\nc.jpg,1.5,0,30,up\n")
    table = read_label_file(path)
    assert _codes(table.frame) == {"a.jpg": (25, 1, 2), "b.jpg": (30, 0, None), "c.jpg": (30, None, 0)}
    assert _problems(table) == [(4, "gender", "1.5", "'1.5' is not one of male, female (or 0..1)")]
    assert table.extras == ("label_pos",)  # the matcher's own column name: kept under another
    matched = match_labels(table, [str(tmp_path / n) for n in ("b.jpg", "a.jpg", "z.jpg")])
    assert matched.frame["label_pos"].to_list() == ["side", "front", None]


def test_a_key_climbing_out_of_the_folder_is_taken_from_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    labels = tmp_path / "work" / "labels.csv"
    labels.write_text("path,age\n../faces/a.jpg,30\nfaces/../../faces/b.jpg,40\n")
    matched = load_labels(labels, [str(tmp_path / "faces" / n) for n in ("a.jpg", "b.jpg")])
    assert matched.frame["true_age"].to_list() == [30, 40] and matched.summary["labels_not_in_inputs"] == 0


def test_absolute_keys_against_no_inputs_match_nothing(tmp_path):
    """A reviewer's finding: an empty predictions table with a labels file of absolute paths raised polars'
    SchemaError (the inputs' column had no type)."""
    path = tmp_path / "labels.csv"
    path.write_text(f"path,age\n{tmp_path / 'a.jpg'},30\n")
    matched = match_labels(read_label_file(path), [])
    assert matched.frame.height == 0 and matched.summary["labels_not_in_inputs"] == 1


@pytest.mark.parametrize(
    "text",
    [
        "path,gender,age\r\na.jpg,f,3\r\n\r\n , ,\r\nb.jpg,m\r\nc.jpg,m,4,5\r\n d.jpg , x ,7 \r\n",  # Windows lines
        "\ufeffpath\tgender\tage\n\na.jpg\tf\t3\nb.jpg\t\t\n\t\t\nc.jpg\tm\n\n\n",  # a BOM, tabs, blank ends
        "path;gender;age\na.jpg;f;3,5\nb.jpg;m;70\n",  # semicolons, a decimal comma
        "only\n\na.jpg\n b.jpg \n",  # one column
        "path,gender,age\n",  # a header alone
    ],
)
def test_a_quote_free_csv_read_line_by_line_equals_the_csv_modules_reading(tmp_path, text):
    """Text without quotes is split line by line in polars (1,000,000 label rows: 8.0 s -> 0.5 s); the same text
    with one field quoted goes through the csv module: every field, line and problem row the same."""
    plain, quoted = tmp_path / "plain.csv", tmp_path / "quoted.csv"
    plain.write_bytes(text.encode())
    name = "only" if text.startswith("only") else "path"  # the header's first name
    quoted.write_bytes(text.replace(name, f'"{name}"', 1).encode())
    rows, problems = tables.read_csv(plain, "plain.csv")
    expected_rows, expected_problems = tables.read_csv(quoted, "quoted.csv")
    assert rows.equals(expected_rows) and problems.equals(expected_problems)
    assert rows.schema == dict.fromkeys(rows.columns[:-1], pl.String) | {tables.LINE: pl.Int64}


def test_a_quote_free_csv_keeps_every_fields_text_and_its_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"path,gender,age\r\na.jpg,f,3\r\n\r\n , ,\r\nb.jpg,m\r\nc.jpg,m,4,5\r\n d.jpg , x ,7 \r\n")
    rows, problems = tables.read_csv(path, "labels.csv")
    assert rows.rows() == [("a.jpg", "f", "3", 2), (" d.jpg ", " x ", "7 ", 7)]
    assert problems.rows() == [
        (5, None, None, "2 fields where the header has 3: row not read"),
        (6, None, None, "4 fields where the header has 3: row not read"),
    ]
    (tmp_path / "blank.csv").write_text(" , \n\n")
    with pytest.raises(FaceattrError, match=r"^b\.csv: no header row"):
        tables.read_csv(tmp_path / "blank.csv", "b.csv")
    (tmp_path / "twice.csv").write_text("path,age,path\na,1,b\n")
    with pytest.raises(FaceattrError, match="a column name repeats in the header"):
        tables.read_csv(tmp_path / "twice.csv", "t.csv")


def _outcome(read, *args):
    """A reading's frames, or its error message."""
    try:
        rows, bad = read(*args)
    except FaceattrError as err:
        return str(err)
    return rows.to_dict(as_series=False), bad.to_dict(as_series=False)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab ,;\t\n\x0b\x1c\xa0", max_size=80))  # \x1c: Python strips it, polars alone would not
def test_splitting_quote_free_lines_equals_the_csv_module_on_any_text(text):
    """The line-by-line reading and the csv module's, on any quote-free text (as read_text gives it: line ends
    already "\n"): the same rows, lines, ragged rows and errors. It found two differences, mended: an empty header
    name (pandas' index: ``column_0`` in the csv module's reading, as polars names it) and a line of \\x1c."""
    lines = text.split("\n")
    first = next((line for line in lines if line.strip()), None)
    sep = tables.delimiter(first or ",")
    fast = _outcome(tables._split_lines, lines, sep, "t.csv")
    assert fast == _outcome(tables._csv_records, text, sep, "t.csv")
