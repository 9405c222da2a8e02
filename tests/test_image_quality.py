"""index --quality: brightness, contrast, sharpness and colourfulness (data.image_quality) by hand on arrays of known
values, as index writes them into its Parquet and summary, and as report slices errors by them from the index given
as --labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.data.decode import load_chip
from faceattr_batch.data.image_quality import QUALITY_COLUMNS, QUALITY_SIDE, measure
from faceattr_batch.data.label_files import read_label_file
from faceattr_batch.index.build import IndexOptions, build_index


def _solid(rgb: tuple[int, int, int], side: int = 64) -> np.ndarray:
    return np.full((side, side, 3), rgb, dtype=np.uint8)


def test_measures_by_hand_on_known_pictures():
    brightness, contrast, sharpness, colourfulness = measure(_solid((128, 128, 128)))
    assert brightness == pytest.approx(128 / 255) and (contrast, sharpness, colourfulness) == (0, 0, 0)
    # pure red: luma 0.299; rg = 255, yb = 127.5 everywhere, so M is 0.3 x their hypotenuse
    brightness, contrast, _, colourfulness = measure(_solid((255, 0, 0)))
    assert brightness == pytest.approx(0.299) and contrast == pytest.approx(0, abs=1e-12)
    assert colourfulness == pytest.approx(0.3 * math.hypot(255, 127.5))
    # half black, half white: luma sd 0.5; the Laplacian is +-1 along the edge's two columns, 0 elsewhere
    halves = _solid((0, 0, 0))
    halves[:, 32:] = 255
    brightness, contrast, sharpness, colourfulness = measure(halves)
    assert (brightness, contrast, colourfulness) == (pytest.approx(0.5), pytest.approx(0.5), 0)
    laplacian = np.zeros((62, 62))
    laplacian[:, 30], laplacian[:, 31] = 1, -1
    assert sharpness == pytest.approx(laplacian.var())
    # blur lowers sharpness, the mean stays
    checks = np.kron(np.indices((8, 8)).sum(axis=0) % 2, np.ones((8, 8)))[..., None].repeat(3, axis=2) * 255
    sharp = Image.fromarray(checks.astype(np.uint8))
    blurred = sharp.resize((16, 16), Image.Resampling.BOX).resize((64, 64), Image.Resampling.BILINEAR)
    assert measure(np.asarray(blurred))[2] < measure(np.asarray(sharp))[2] / 4
    assert measure(np.asarray(blurred))[0] == pytest.approx(measure(np.asarray(sharp))[0], abs=0.01)


@pytest.fixture()
def faces(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    root.mkdir()
    rng = np.random.default_rng(0)
    colour = np.clip(rng.normal((150, 110, 90), 30, (96, 96, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(colour).save(root / "30_0_0_20170101000000001.jpg.chip.jpg", quality=95)
    Image.fromarray(colour[..., 0]).save(root / "40_1_1_20170101000000002.jpg.chip.jpg", quality=95)  # grey, mode L
    Image.fromarray(colour // 6).save(root / "50_0_2_20170101000000003.png")  # dark
    (root / "60_1_3_20170101000000004.jpg.chip.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def test_index_quality_columns_equal_the_measure_of_each_chip_and_a_bad_file_is_a_row(faces: Path, tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "index.parquet"
    shown = runner.invoke(app, ["index", str(faces), "--quality", "-o", str(out), "--workers", "0"])
    assert shown.exit_code == 0, shown.output
    table = pl.read_parquet(out).sort("path")
    assert all(table.schema[name] == pl.Float32 for name in QUALITY_COLUMNS)
    for row in table.head(3).iter_rows(named=True):
        expected = measure(load_chip(faces / row["path"], QUALITY_SIDE))
        assert [row[name] for name in QUALITY_COLUMNS] == pytest.approx(expected, rel=1e-6), row["path"]
        assert row["error"] is None
    colour, grey, dark, bad = table.iter_rows(named=True)
    assert grey["colourfulness"] == 0 and colour["colourfulness"] > 20
    assert dark["brightness"] < colour["brightness"] / 4
    assert bad["error"].startswith("cannot decode: ") and all(bad[name] is None for name in QUALITY_COLUMNS)

    summary = json.loads(runner.invoke(app, ["index", str(faces), "--quality", "-o", str(out), "--json"]).stdout)
    quality = summary["quality"]
    assert (quality["measured"], quality["grey"], quality["grey_below"]) == (3, 1, 5.0)
    values = table.head(3)["brightness"]
    assert quality["brightness"]["median"] == pytest.approx(values.median())
    assert quality["brightness"]["p5"] == pytest.approx(values.quantile(0.05, "linear"))
    assert summary["options"]["quality"] is True
    line = next(text for text in shown.stdout.splitlines() if text.startswith("quality of"))
    assert line.startswith("quality of 3 images (5th / 50th / 95th percentile): brightness ")
    assert line.endswith("; 1 grey (colourfulness under 5)")


def test_an_index_given_as_labels_brings_its_quality_columns_to_slice_by(faces: Path, tmp_path: Path):
    index = tmp_path / "index.parquet"
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(faces), "--quality", "-o", str(index)]).exit_code == 0
    frame = read_label_file(index).frame
    assert set(QUALITY_COLUMNS) <= set(frame.columns) and "size_bytes" not in frame.columns  # the rest is the files'
    written = pl.read_parquet(index)
    for name in QUALITY_COLUMNS:
        assert sorted(frame[name].drop_nulls()) == sorted(written[name].drop_nulls()), name
    plain = tmp_path / "plain.parquet"
    assert runner.invoke(app, ["index", str(faces), "-o", str(plain)]).exit_code == 0
    assert not set(QUALITY_COLUMNS) & set(read_label_file(plain).frame.columns)


def test_the_same_folder_without_quality_has_no_quality(faces: Path):
    result = build_index(IndexOptions(root=faces))
    assert "quality" not in result.summary and not set(QUALITY_COLUMNS) & set(result.table.columns)


def test_report_slices_errors_by_brightness_from_the_index_as_labels(tmp_path: Path):
    """Another tool's table (path, gender, age, race) reported against an index --quality: darker pictures err
    by 2 years here, brighter by 8; the two brightness halves say so."""
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,gender,age,race"]
    for i in range(8):
        pixels = np.clip(rng.normal((150, 110, 90), 30, (64, 64, 3)) * (0.2 + 0.1 * i), 0, 255).astype(np.uint8)
        name = f"{20 + i}_{i % 2}_0_2017010100000000{i}.jpg.chip.jpg"
        Image.fromarray(pixels).save(faces / name, quality=95)
        rows.append(f"{(faces / name).resolve()},{('male', 'female')[i % 2]},{20 + i + (2 if i < 4 else 8)},White")
    (tmp_path / "other.csv").write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(faces), "--quality", "-o", str(tmp_path / "index.parquet")]).exit_code == 0
    args = ["report", str(tmp_path / "other.csv"), "--labels", str(tmp_path / "index.parquet")]
    shown = runner.invoke(
        app, [*args, "--slice-by", "brightness:2", "--min-group", "2", "--report", str(tmp_path / "r")]
    )
    assert shown.exit_code == 0, shown.output
    groups = json.loads((tmp_path / "r" / "metrics.json").read_text())["fairness"]["brightness"]["groups"]
    assert [(g["n"], g["metrics"]["age_mae"]["value"]) for g in groups] == [(4, 2.0), (4, 8.0)]
    assert groups[0]["group"].startswith("[") and groups[1]["group"].endswith("]")  # darker half first
