"""predict --sample N: a seeded random sample of the listed images (data.inputs.sample_positions), the same on any
listing order, nested in a larger one; its rows, the record in the Parquet's options, and the note on the terminal,
in metrics.json and on the page."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
from conftest import make_faces
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.data.inputs import sample_positions
from faceattr_batch.pipelines.predict import PredictOptions, run
from faceattr_batch.schema import OPTIONS_KEY, recorded

FAST = {"workers": 1, "threads": 1, "runtime": "torch", "progress": False, "batch_size": 8, "shard_size": 8}


def test_the_sample_is_seeded_order_free_and_nested():
    keys = [f"faces/{i:05d}.jpg" for i in range(1000)]
    ten = sample_positions(keys, 10, seed=0)
    assert ten == sorted(ten) and len(set(ten)) == 10
    assert sample_positions(keys, 10, seed=0) == ten and sample_positions(keys, 10, seed=1) != ten
    shuffled = random.Random(3).sample(keys, len(keys))
    assert {shuffled[i] for i in sample_positions(shuffled, 10, seed=0)} == {keys[i] for i in ten}
    assert set(ten) <= set(sample_positions(keys, 50, seed=0))  # a larger sample keeps a smaller one's
    assert sample_positions(keys[:5], 10, seed=0) == [0, 1, 2, 3, 4]  # no more than there are
    # roughly uniform: 200 of 1,000 draws half from each half of the listing
    assert 80 <= sum(i < 500 for i in sample_positions(keys, 200, seed=0)) <= 120


def test_predict_writes_the_sample_and_records_it(tmp_path, tiny_attr_model):
    paths = sorted(make_faces(tmp_path / "in", 30))
    labels = tmp_path / "labels.csv"  # every image labelled: the labels' summary stays the folder's
    labels.write_text("file,age\n" + "".join(f"{p.name},{40}\n" for p in paths))
    out = tmp_path / "sample.parquet"
    result = run(
        PredictOptions(inputs=(str(tmp_path / "in"),), output=out, model=str(tiny_attr_model), sample=12,
                       sample_seed=5, labels=labels, report_dir=tmp_path / "r", **FAST)
    )  # fmt: skip
    chosen = sample_positions([str(p) for p in paths], 12, 5)
    table = pl.read_parquet(out)
    assert table["path"].to_list() == [str(paths[i]) for i in chosen]
    assert (result.images, result.settings["sample"]) == (12, {"images": 12, "of": 30, "seed": 5})
    assert recorded(out, OPTIONS_KEY)["sample"] == {"images": 12, "of": 30, "seed": 5}
    assert result.labels["matched_inputs"] == 30 and result.labels["labels_not_in_inputs"] == 0
    assert table["true_age"].to_list() == [40] * 12
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["sample"] == {"images": 12, "of": 30, "seed": 5} and metrics["images"] == 12
    note = "a seeded random sample: 12 of the 30 listed images (--sample-seed 5); its figures and intervals estimate"
    assert note in (tmp_path / "r" / "report.html").read_text()
    whole = run(PredictOptions(inputs=(str(tmp_path / "in"),), output=tmp_path / "all.parquet",
                               model=str(tiny_attr_model), report_dir=tmp_path / "r2", **FAST))  # fmt: skip
    assert (
        whole.settings["sample"] is None
        and json.loads((tmp_path / "r2" / "metrics.json").read_text())["sample"] is None
    )
    # the sampled rows carry the values the whole run gives those images
    same = pl.read_parquet(tmp_path / "all.parquet").filter(pl.col("path").is_in(table["path"].to_list()))
    assert same["pred_age"].to_list() == pytest.approx(table["pred_age"].to_list(), abs=1e-5)


def test_cli_prints_the_sample_and_refuses_a_sample_of_none(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 10)
    runner = CliRunner()
    args = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "o.parquet"), "-m", str(tiny_attr_model)]
    shown = runner.invoke(app, [*args, "--sample", "4", "--workers", "0", "--runtime", "torch"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "a seeded random sample: 4 of the 10 listed images (--sample-seed 0)" in shown.stdout
    assert pl.read_parquet(tmp_path / "o.parquet").height == 4
    # report reads the sample from the Parquet's recorded options: the terminal, metrics.json and the page say it
    shown = runner.invoke(app, ["report", str(tmp_path / "o.parquet"), "--report", str(tmp_path / "r")])
    assert shown.exit_code == 0, shown.output
    assert "a seeded random sample: 4 of the 10 listed images (--sample-seed 0)" in shown.stdout.replace("\n", " ")
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["sample"] == {"images": 4, "of": 10, "seed": 0}
    assert "a seeded random sample: 4 of the 10" in (tmp_path / "r" / "report.html").read_text()
    refused = runner.invoke(app, [*args, "--sample", "0"])
    assert refused.exit_code == 2 and "--sample" in refused.output
