"""index as a dataset audit: with --hash over a folder of splits (train/, test/, val/), the duplicate groups whose
pictures lie in more than one top-level folder, counted per pair of folders; the images per gender x race x age band
cell, the empty and thin ones named; in the summary, the terminal and --json."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from test_index import face_like
from typer.testing import CliRunner

from faceattr_batch import summaries
from faceattr_batch.cli import app
from faceattr_batch.data.image_quality import QUALITY_COLUMNS
from faceattr_batch.index.build import IndexOptions, build_index
from faceattr_batch.index.label_audit import MIN_HEAP, age_heaping

A, B, C, D, E, F, G, H = (f"{n}_20170101000000{i:03d}.jpg.chip.jpg" for i, n in enumerate(
    ("30_0_0", "30_0_0", "40_0_0", "30_0_0", "30_0_0", "31_1_1", "31_1_1", "31_1_1"), start=1
))  # fmt: skip


@pytest.fixture()
def splits(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    for folder in ("train", "test", "val"):
        (root / folder).mkdir(parents=True)
    face_like(1).save(root / "train" / A, quality=95)
    shutil.copyfile(root / "train" / A, root / "test" / B)  # byte copy in test/
    face_like(1).save(root / "val" / C, quality=60)  # re-encoded in val/, another age: a conflict too
    face_like(2).save(root / "train" / D, quality=95)
    face_like(2).save(root / "train" / E.replace(".jpg.chip.jpg", ".png"))  # a copy inside train/ only
    face_like(3).save(root / "test" / F, quality=95)  # alone
    face_like(4).save(root / G, quality=95)  # directly in the folder ...
    shutil.copyfile(root / G, root / "val" / H)  # ... and in val/
    return root


def test_groups_across_top_level_folders_are_counted_per_pair_and_listed(splits: Path):
    dups = build_index(IndexOptions(root=splits, hash=True, workers=0)).summary["duplicates"]
    assert (dups["groups"], dups["images_in_groups"]) == (3, 7)  # the train/-only pair is a group, not across
    groups = {row["paths"][0]: row["dup_group"] for row in dups["across_folders"]["list"]}
    assert dups["across_folders"] == {
        "folders": [".", "test", "train", "val"],
        "groups": 2,
        "images": 5,
        "pairs": [
            {"folders": [".", "val"], "groups": 1},
            {"folders": ["test", "train"], "groups": 1},
            {"folders": ["test", "val"], "groups": 1},
            {"folders": ["train", "val"], "groups": 1},
        ],
        "list": [
            {"dup_group": groups[G], "paths": [G, f"val/{H}"], "folders": [".", "val"]},
            {"dup_group": groups[f"test/{B}"], "paths": [f"test/{B}", f"train/{A}", f"val/{C}"],
             "folders": ["test", "train", "val"]},
        ],
    }  # fmt: skip


def test_one_top_level_folder_has_no_across_entry(tmp_path: Path):
    for layout in ("flat", "nested"):
        root = tmp_path / layout
        folder = root if layout == "flat" else root / "train"
        folder.mkdir(parents=True)
        face_like(1).save(folder / A, quality=95)
        shutil.copyfile(folder / A, folder / B)
        dups = build_index(IndexOptions(root=root, hash=True, workers=0)).summary["duplicates"]
        assert dups["groups"] == 1 and dups["across_folders"] is None, layout


def test_cli_prints_the_pairs_and_groups_and_json_holds_them(splits: Path, tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "index.parquet"
    args = ["index", str(splits), "-o", str(out), "--hash", "--workers", "0"]
    shown = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert (
        "duplicates across top-level folders (./, test/, train/, val/): 2 groups holding 5 images "
        "(./ ~ val/ 1; test/ ~ train/ 1; test/ ~ val/ 1; train/ ~ val/ 1)"
    ) in shown.stdout
    assert "groups across top-level folders (splits that share a picture leak it): 2" in shown.stdout
    assert "test/ ~ train/ ~ val/" in shown.stdout and f"val/{H}" in shown.stdout
    table = pl.read_parquet(out)
    assert table.height == 8 and table.filter(pl.col("dup_size") > 1).height == 7
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    across = json.loads(as_json.stdout)["duplicates"]["across_folders"]
    assert (across["groups"], across["images"], len(across["list"])) == (2, 5, 2)


def test_cells_count_every_gender_race_age_band_cell_fewest_first(splits: Path):
    (splits / "holiday.jpg").write_bytes((splits / G).read_bytes())  # no labels: in no cell
    cells = build_index(IndexOptions(root=splits)).summary["cells"]
    assert len(cells) == 100 and sum(c["n"] for c in cells) == 8
    assert cells[0] == {"gender": "male", "race": "White", "age_band": "0-2", "n": 0}  # empty ones in label order
    assert cells[-3:] == [
        {"gender": "male", "race": "White", "age_band": "40-49", "n": 1},
        {"gender": "female", "race": "Black", "age_band": "30-39", "n": 3},
        {"gender": "male", "race": "White", "age_band": "30-39", "n": 4},
    ]
    shown = CliRunner().invoke(
        app, ["index", str(splits), "-o", str(splits.parent / "i.parquet")], env={"COLUMNS": "250"}
    )
    assert shown.exit_code == 0, shown.output
    assert (
        "gender x race x age band: 100 cells, 97 empty, 3 with 1-29 images; "
        "thinnest: male White 40-49 1, female Black 30-39 3, male White 30-39 4\n"
    ) in shown.stdout


def test_thin_cells_name_few_empty_cells_and_cut_a_long_list():
    cells = [
        {"gender": "female", "race": "Others", "age_band": "80+", "n": 0},
        *({"gender": "male", "race": "Asian", "age_band": band, "n": n} for n, band in enumerate(
            ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+"), start=20
        )),
    ]  # fmt: skip
    assert summaries._thin_cells(cells) == (
        "gender x race x age band: 11 cells, 1 empty, 10 with 1-29 images; empty: female Others 80+; thinnest: "
        "male Asian 0-2 20, male Asian 3-9 21, male Asian 10-19 22, male Asian 20-29 23, male Asian 30-39 24, "
        "male Asian 40-49 25, male Asian 50-59 26, male Asian 60-69 27 ..."
    )
    many_empty = [{**cells[0], "n": 0}] * 9 + [{**cells[1], "n": 30}]
    assert summaries._thin_cells(many_empty) == "gender x race x age band: 10 cells, 9 empty, 0 with 1-29 images"


def _ages(counts: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame({"age": [age for age, n in counts.items() for _ in range(n)]}, schema={"age": pl.Int64})


def test_whipple_index_by_hand_and_the_heaped_ages():
    even = {age: 3 for age in range(23, 63)}  # every final digit alike: 100
    assert age_heaping(_ages(even))["whipple"] == 100
    assert age_heaping(_ages({age: 15 for age in range(25, 61, 5)}))["whipple"] == 500  # rounded to 0s and 5s
    assert age_heaping(_ages({age: 2 for age in range(23, 63)}))["whipple"] is None  # 80 ages: too few
    # 30 and 40 carry 4 times their share: (12 + 12 + 6 x 3) / 138 x 500 = 152.2; 12 images are under MIN_HEAP
    result = age_heaping(_ages(even | {30: 12, 40: 12}))
    assert (result["whipple"], result["ages_23_62"], result["heaps"]) == (152.2, 138, [])
    assert MIN_HEAP == 20
    big = age_heaping(_ages({age: 10 for age in range(20, 70)} | {26: 50, 35: 30, 68: 90}))
    # 68 is within 2 of the oldest age: its missing neighbour is no evidence, so it is not judged
    assert big["heaps"] == [{"age": 26, "n": 50, "ratio": 5.0}, {"age": 35, "n": 30, "ratio": 3.0}]


def test_the_terminal_says_the_index_and_the_heaps():
    line = summaries._age_heaping(
        {"whipple": 133.0, "ages_23_62": 12816, "heaps": [{"age": 85, "n": 125, "ratio": 7.14}]}
    )
    assert line == (
        "age heaping: Whipple's index 133 over 12816 ages 23-62 (100: no preference for 0s and 5s; 500: every age a "
        "multiple of 5; 125-175: rough); most heaped, against the ages either side: 85 (7.14x)"
    )
    assert summaries._age_heaping({"whipple": None, "ages_23_62": 8, "heaps": []}) == (
        "age heaping: too few ages 23-62 (8) for Whipple's index"
    )


def test_index_report_writes_a_page_about_the_dataset(splits: Path, tmp_path: Path):
    runner = CliRunner()
    report = tmp_path / "dataset"
    args = ["index", str(splits), "-o", str(tmp_path / "i.parquet"), "--hash", "--quality", "--workers", "0"]
    shown = runner.invoke(app, [*args, "--report", str(report)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert f"report: {report / 'dataset.html'}" in shown.stdout
    page = (report / "dataset.html").read_text()
    png = (report / "age_histogram.png").read_bytes()
    assert png.startswith(b"\x89PNG") and base64.b64encode(png).decode() in page  # embedded as written
    white_men = re.search(r"<td class='l'>male White</td>((?:<td[^>]*>\d+</td>){10})<td><b>(\d+)</b>", page)
    assert re.findall(r">(\d+)<", white_men.group(1))[4:6] == ["4", "1"] and white_men.group(2) == "5"  # 30s, 40s
    assert "100 cells: 97 empty (red), 3 with fewer than 30 images" in page
    assert "Age heaping: too few ages 23-62 (8) for Whipple" in page and "Every name follows the grammar." in page
    assert "3 groups hold 7 images (1 byte-identical); 1 carry different labels." in page
    assert "Label conflicts: one picture, different labels: 1</h3>" in page and "30_0_0 vs 40_0_0" in page
    assert "(a split that shares one leaks it): 2</h3>" in page and ". vs val" in page
    assert page.count("data:image/jpeg;base64,") == 3 + 2 + 3  # each shown group's pictures, made from the files
    assert "<h2>Picture quality</h2>" in page and all(f">{name}<" in page for name in QUALITY_COLUMNS)
    summary = json.loads(runner.invoke(app, [*args, "--report", str(report), "--json"]).stdout)
    assert summary["report"] == str(report / "dataset.html")
    assert f"{summary['quality']['grey']} grey (colourfulness under 5)" in page


def test_a_plain_index_page_says_how_to_get_what_it_lacks(splits: Path, tmp_path: Path):
    args = ["index", str(splits), "-o", str(tmp_path / "i.parquet"), "--report", str(tmp_path / "r")]
    assert CliRunner().invoke(app, args).exit_code == 0
    page = (tmp_path / "r" / "dataset.html").read_text()
    assert "Not looked for: index --hash finds them." in page and "Not measured: index --quality measures it." in page
    assert "data:image/jpeg" not in page and "label conflicts" not in page  # no duplicate card without --hash


def test_a_report_folder_inside_the_indexed_folder_is_refused(splits: Path, tmp_path: Path):
    shown = CliRunner().invoke(
        app, ["index", str(splits), "-o", str(tmp_path / "i.parquet"), "--report", str(splits / "r")]
    )
    assert shown.exit_code == 2
    assert "--report" in shown.output and "would be read as faces" in shown.output and not (splits / "r").exists()
    assert not (tmp_path / "i.parquet").exists()  # refused before any work


def test_the_page_lists_the_first_50_names_escaped_and_counts_the_rest():
    from faceattr_batch.reporting.dataset_page import NAMES_SHOWN, _names

    rejected = [{"path": f"<b>{i}.jpg", "reason": "no race field"} for i in range(60)]
    listed = _names({"rejected": rejected, "recovered": [{"path": "x.jpg", "reason": "missing dot"}]})
    assert NAMES_SHOWN == 50 and listed.count("<tr>") == 1 + 50 and "&lt;b&gt;0.jpg" in listed and "<b>0" not in listed
    assert "and 11 more (all of them with --json)" in listed and "x.jpg" not in listed
