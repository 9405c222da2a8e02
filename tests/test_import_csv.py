"""import-csv: the 48x48 CSV -> lossless PNGs with UTKFace names; bad rows reported, not fatal."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from faceattr_batch import FaceattrError
from faceattr_batch.cli import app
from faceattr_batch.data.labels import format_name, parse_name
from faceattr_batch.index.build import IndexOptions, build_index
from faceattr_batch.io import atomic
from faceattr_batch.pipelines import import_csv as import_csv_module
from faceattr_batch.pipelines.import_csv import ImportCsvOptions, import_csv

HEADER = "age,ethnicity,gender,img_name,pixels"


def pixels(seed: int, count: int = 48 * 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8)


def row(age, race, gender, img_name, values) -> str:
    text = values if isinstance(values, str) else " ".join(str(int(v)) for v in values)
    return f"{age},{race},{gender},{img_name},{text}"


@pytest.fixture()
def csv_file(tmp_path: Path) -> Path:
    lines = [
        HEADER,
        row(25, 2, 1, "20170116174525125.jpg.chip.jpg", pixels(1)),  # 1: good, stamp from img_name
        row(3, 0, 0, "no-date-here.jpg", pixels(2)),  # 2: good, synthetic stamp
        row(40, 1, 0, "20170116174525125.jpg.chip.jpg", pixels(3, 100)),  # 3: too few values
        row(40, 1, 0, "x", " ".join(["7"] * 2303 + ["seven"])),  # 4: non-numeric
        row(40, 1, 0, "x", " ".join(["256"] * 2304)),  # 5: out of range
        row("forty", 1, 0, "x", pixels(4)),  # 6: bad age
        row(40, 7, 0, "x", pixels(5)),  # 7: bad ethnicity code
        row(40, 1, 0, "x", ""),  # 8: empty pixels
        row(25, 2, 1, "20170116174525125.jpg.chip.jpg", pixels(6)),  # 9: same labels+stamp as row 1
    ]
    path = tmp_path / "age_gender.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_rows_become_pngs_with_parseable_names_and_exact_pixels(csv_file: Path, tmp_path: Path):
    out = tmp_path / "faces"
    result = import_csv(ImportCsvOptions(csv=csv_file, out_dir=out))
    assert (result.rows, result.written) == (9, 3)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "25_1_2_20170116174525125.png",
        "25_1_2_20170116174525126.png",  # the clash moved on by 1 ms
        "3_0_0_20000101000000002.png",  # synthetic stamp: 2000-01-01 + row 2 ms
    ]
    first = parse_name(names[0])
    assert (first.status, first.age, first.gender, first.race) == ("ok", 25, 1, 2)
    assert first.captured_at == dt.datetime(2017, 1, 16, 17, 45, 25, 125000)
    with Image.open(out / names[0]) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (48, 48))
        assert np.array_equal(np.asarray(im).ravel(), pixels(1))  # lossless


def test_bad_rows_are_reported_with_row_numbers(csv_file: Path, tmp_path: Path):
    result = import_csv(ImportCsvOptions(csv=csv_file, out_dir=tmp_path / "faces"))
    reasons = {bad["row"]: bad["reason"] for bad in result.bad_rows}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert "100 values, expected 2304" in reasons[3]
    assert "non-numeric value 'seven'" in reasons[4]
    assert "outside 0..255" in reasons[5]
    assert reasons[6].startswith("age:")
    assert "race 7" in reasons[7]
    assert "empty" in reasons[8]
    assert {bad["line"] - bad["row"] for bad in result.bad_rows} == {1}  # line counts the header


def test_a_huge_pixel_value_is_out_of_range_and_a_superscript_age_no_integer(tmp_path: Path):
    """A reviewer's findings: 99999999999 (beyond Int32) was called "non-numeric"; an age "²" passed isdigit() and
    got int()'s own message."""
    lines = [HEADER, row(40, 1, 0, "x", " ".join(["7"] * 2303 + ["99999999999"])), row("²", 1, 0, "x", pixels(1))]
    (tmp_path / "odd.csv").write_text("\n".join(lines) + "\n")
    result = import_csv(ImportCsvOptions(csv=tmp_path / "odd.csv", out_dir=tmp_path / "faces"))
    reasons = [bad["reason"] for bad in result.bad_rows]
    assert reasons == ["pixels: value outside 0..255", "age: '²' is not a non-negative integer"]


@pytest.mark.parametrize("closed_later", [False, True])
def test_a_quote_left_open_costs_its_own_row_only(tmp_path: Path, caplog, closed_later: bool):
    """A reviewer's finding: polars refused the whole file ("cannot read as CSV"), or, where a later line closed the
    quote, read the lines between as one field: rows lost without a word."""
    lines = [
        HEADER,
        row(25, 2, 1, "x", pixels(1)),
        row(26, 2, 1, '"x', pixels(2)),  # 2: the quote left open; its row is good all the same
        row(27, 2, 1, "x", pixels(3)),
        row(28, 2, 1, 'x"' if closed_later else "x", pixels(4)),
        row(29, 7, 1, "x", pixels(5)),  # 5: a bad row, still at its own line
    ]
    (tmp_path / "quote.csv").write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        result = import_csv(ImportCsvOptions(csv=tmp_path / "quote.csv", out_dir=tmp_path / "faces"))
    assert (result.rows, result.written) == (5, 4)
    assert [(bad["row"], bad["line"]) for bad in result.bad_rows] == [(5, 6)]
    assert sorted(int(p.name.split("_")[0]) for p in (tmp_path / "faces").iterdir()) == [25, 26, 27, 28]
    assert any("a quote on line 3 runs past the line's end" in message for message in caplog.messages)


def test_blank_lines_are_no_rows_and_move_the_lines_on(tmp_path: Path):
    """A reviewer's finding: blank lines (a trailing one, one in the middle) were counted as rows, each a bad row
    "pixels: empty" at its line."""
    lines = [HEADER, row(25, 2, 1, "x", pixels(1)), "", row(40, 7, 0, "x", pixels(2)), "", ""]
    (tmp_path / "blank.csv").write_text("\n".join(lines) + "\n")
    result = import_csv(ImportCsvOptions(csv=tmp_path / "blank.csv", out_dir=tmp_path / "faces"))
    assert (result.rows, result.written) == (2, 1)
    assert [(bad["row"], bad["line"]) for bad in result.bad_rows] == [(2, 4)]  # line 3 is blank
    assert "race 7" in result.bad_rows[0]["reason"]


def test_imported_folder_indexes_cleanly(csv_file: Path, tmp_path: Path):
    out = tmp_path / "faces"
    import_csv(ImportCsvOptions(csv=csv_file, out_dir=out))
    result = build_index(IndexOptions(root=out, probe=True, workers=0))
    assert result.summary["status"] == {"ok": 3, "recovered": 0, "rejected": 0}
    assert set(result.table["width"]) == {48}


def test_a_folder_that_is_not_empty_is_refused_unless_overwrite(csv_file: Path, tmp_path: Path):
    out = tmp_path / "faces"
    import_csv(ImportCsvOptions(csv=csv_file, out_dir=out))
    other = tmp_path / "other.csv"  # another CSV whose row gets the same name as the first's row 1
    other.write_text("\n".join([HEADER, row(25, 2, 1, "20170116174525125.jpg.chip.jpg", pixels(9))]) + "\n")
    with pytest.raises(FaceattrError, match=r"faces is not empty: add --overwrite to replace files of the same name"):
        import_csv(ImportCsvOptions(csv=other, out_dir=out))
    with Image.open(out / "25_1_2_20170116174525125.png") as im:
        assert np.array_equal(np.asarray(im).ravel(), pixels(1))
    import_csv(ImportCsvOptions(csv=other, out_dir=out, overwrite=True))
    assert len(list(out.iterdir())) == 3
    with Image.open(out / "25_1_2_20170116174525125.png") as im:
        assert np.array_equal(np.asarray(im).ravel(), pixels(9))


def test_a_clash_at_the_last_datetime_falls_back_to_the_rows_synthetic_stamp(tmp_path: Path):
    last = "99991231235959999.jpg"
    csv = tmp_path / "max.csv"
    rows = [row(30, 0, 1, last, pixels(1)), row(30, 0, 1, last, pixels(2)), row(31, 0, 1, last, pixels(3))]
    csv.write_text("\n".join([HEADER, *rows, row(30, 0, 1, last, pixels(4))]) + "\n")
    result = import_csv(ImportCsvOptions(csv=csv, out_dir=tmp_path / "o"))
    assert result.written == 4
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "30_1_0_20000101000000002.png",  # row 2: 2000-01-01 + 2 ms
        "30_1_0_20000101000000004.png",  # row 4: its own synthetic stamp, not on from row 2's (a reviewer's finding)
        "30_1_0_99991231235959999.png",
        "31_1_0_99991231235959999.png",
    ]


def test_many_rows_of_one_name_walk_on_from_the_last_clash_and_files_are_not_synced_one_by_one(tmp_path, monkeypatch):
    """A reviewer's finding: the k-th row of one labels+stamp walked over the k - 1 names before it (4,000 such rows:
    47 s), and each PNG was fsynced (4 ms a file)."""
    rows = [row(30, 0, 1, "20170116174525125.jpg", pixels(i)) for i in range(300)]
    (tmp_path / "same.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    named, synced = [], []
    monkeypatch.setattr(import_csv_module, "format_name", lambda *a, **k: named.append(a) or format_name(*a, **k))
    monkeypatch.setattr(atomic, "fsync", synced.append)
    result = import_csv(ImportCsvOptions(csv=tmp_path / "same.csv", out_dir=tmp_path / "o"))
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert result.written == 300 and names == [f"30_1_0_20170116174525{125 + i:03d}.png" for i in range(300)]
    assert len(named) < 4 * 300 + 300  # label checks and first names: 3 a row; no walk over earlier clashes
    assert synced == []
    with Image.open(tmp_path / "o" / names[-1]) as im:
        assert np.array_equal(np.asarray(im).ravel(), pixels(299))


def test_missing_file_or_columns_is_an_error(tmp_path: Path):
    with pytest.raises(FaceattrError, match="no such file"):
        import_csv(ImportCsvOptions(csv=tmp_path / "nope.csv", out_dir=tmp_path / "o"))
    bad = tmp_path / "bad.csv"
    bad.write_text("age,gender,pixels\n1,0,1 2 3\n")
    with pytest.raises(FaceattrError, match="missing column.*ethnicity, img_name"):
        import_csv(ImportCsvOptions(csv=bad, out_dir=tmp_path / "o"))
    assert not (tmp_path / "o").exists()  # a reviewer's finding: the failed run left the folder it made, empty
    (tmp_path / "kept").mkdir()
    with pytest.raises(FaceattrError, match="missing column"):
        import_csv(ImportCsvOptions(csv=bad, out_dir=tmp_path / "kept"))
    assert (tmp_path / "kept").is_dir()  # the user's own folder stays
    with pytest.raises(FaceattrError, match=r"kept: a folder; give the CSV file"):
        import_csv(ImportCsvOptions(csv=tmp_path / "kept", out_dir=tmp_path / "o"))


def test_unwritable_output_fails_before_reading(csv_file: Path, tmp_path: Path, monkeypatch):
    """Rough edge 2: an output place that cannot be written is one FaceattrError, before the CSV is read."""
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(import_csv_module, "_read", lambda path: pytest.fail("read the CSV first"))
    with pytest.raises(FaceattrError, match=r"^-o .*plain-file/faces: cannot write there"):
        import_csv(ImportCsvOptions(csv=csv_file, out_dir=blocker / "faces"))
    with pytest.raises(FaceattrError, match="nope.csv: no such file"):
        import_csv(ImportCsvOptions(csv=tmp_path / "nope.csv", out_dir=tmp_path / "o"))
    assert not (tmp_path / "o").exists()  # a missing CSV leaves no empty output folder behind


def test_cli_import_csv(csv_file: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["import-csv", str(csv_file), "-o", str(tmp_path / "f"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["bad_rows"]) == (3, 6)
    table = runner.invoke(app, ["import-csv", str(csv_file), "-o", str(tmp_path / "g")], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "wrote 3 of 9 rows" in table.stdout and "100 values" in table.stdout
    missing = runner.invoke(app, ["import-csv", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "h")])
    assert missing.exit_code == 2 and missing.stderr.strip().startswith("error: ")
