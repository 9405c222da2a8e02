"""The report with a FairFace-like labels file: the age bins measured by the share of predicted ages inside them
(overall, per slice, in the fairness summary, on the page and in the terminal), the labels file's block on the page,
and the per-group calibration curves (metrics.json's bins and the figures drawn from them). Every expected value is
worked out here by hand, in plain Python over the rows."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.data.label_files import PROBLEMS_KEPT, attach_labels, load_labels
from faceattr_batch.metrics import attributes
from faceattr_batch.metrics.fairness import fairness_summary
from faceattr_batch.reporting.folder import write_report
from faceattr_batch.reporting.labels_page import labels_html
from faceattr_batch.reporting.summary import summarize
from faceattr_batch.schema import PREDICTION_FIELDS, RACE_PROB_COLUMNS, derived_columns, with_age_bins
from faceattr_batch.summaries import headline_metrics

Z95 = 1.959963984540054
MIN_GROUP = 8
BINS = ((0, 2), (3, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69), (70, 120))
FAIRFACE_RACES = ("White", "Black", "East Asian", "Southeast Asian", "Indian", "Latino_Hispanic", "Middle Eastern")
OURS = {"White": 0, "Black": 1, "East Asian": 2, "Southeast Asian": 2, "Indian": 3}  # the others: Others, 4
N = 90


def _bin_text(low: int, high: int) -> str:
    return "more than 70" if low == 70 else f"{low}-{high}"


def _inside(pred_age: float, low: int, high: int) -> bool:
    """The documented rule: the predicted age rounded to whole years, halves up, inside [low, high]."""
    return low <= math.floor(pred_age + 0.5) <= high


@pytest.fixture(scope="module")
def fairface(tmp_path_factory):
    """A FairFace labels CSV (3 unreadable values, 1 row for no input) and predictions for its images: (rows by
    hand, the predictions with the labels attached, the labels summary)."""
    folder = tmp_path_factory.mktemp("fairface")
    rng = np.random.default_rng(11)
    rows = []
    for i in range(N):
        low, high = BINS[int(rng.integers(0, len(BINS)))]
        centre = (low + min(high, 80)) / 2
        rows.append({
            "file": f"ff{i:03d}.jpg", "low": low, "high": high, "race7": FAIRFACE_RACES[i % 7],
            "gender": int(rng.integers(0, 2)), "service_test": bool(i % 3),
            "pred_age": float(centre + rng.normal(0, 6)), "p_female": float(rng.uniform()),
        })  # fmt: skip
    rows[0]["pred_age"], rows[0]["low"], rows[0]["high"] = 29.5, 20, 29  # rounds to 30: outside 20-29
    rows[1]["pred_age"], rows[1]["low"], rows[1]["high"] = 19.5, 20, 29  # rounds to 20: inside
    rows[2]["pred_age"], rows[2]["low"], rows[2]["high"] = 69.5, 70, 120  # "more than 70": inside
    lines = ["file,age,gender,race,service_test"]
    for r in rows:
        gender = ("Male", "Female")[r["gender"]]
        lines.append(f"{r['file']},{_bin_text(r['low'], r['high'])},{gender},{r['race7']},{r['service_test']}")
    lines[4] = "ff003.jpg,abc,Male,White,True"  # line 5: no age
    lines[6] = lines[6].replace(",Male,", ",x,").replace(",Female,", ",x,")  # line 7: no gender
    lines[8] = lines[8].replace(f",{rows[7]['race7']},", ",martian,")  # line 9: no race
    lines.append("elsewhere.jpg,20-29,Male,White,True")
    csv = folder / "fairface_label_val.csv"
    csv.write_text("\n".join(lines) + "\n")
    rows[3]["low"] = rows[3]["high"] = None
    rows[5]["gender"] = None
    rows[7]["race7"] = None
    probs = rng.dirichlet(np.ones(5), N)
    predictions = pl.DataFrame({
        "path": [f"/nowhere/{r['file']}" for r in rows],
        "pred_gender": [int(r["p_female"] >= 0.5) for r in rows], "p_female": [r["p_female"] for r in rows],
        "pred_race": probs.argmax(axis=1).tolist(),
        **{name: probs[:, i].tolist() for i, name in enumerate(RACE_PROB_COLUMNS)},
        "pred_age": [r["pred_age"] for r in rows], "age_low": [r["pred_age"] - 5 for r in rows],
        "age_high": [r["pred_age"] + 5 for r in rows], "true_age": [None] * N, "true_age_low": [None] * N,
        "true_age_high": [None] * N, "true_gender": [None] * N,
        "true_race": [None] * N, "error": [None] * N, "model_name": ["test"] * N, "model_version": ["1"] * N,
    }, schema_overrides={"error": pl.String})  # fmt: skip
    codes = ("true_age", "true_age_low", "true_age_high", "true_gender", "true_race", "pred_gender", "pred_race")
    predictions = predictions.with_columns(pl.col(c).cast(PREDICTION_FIELDS[c]) for c in codes)
    predictions = predictions.with_columns(derived_columns())
    matched = load_labels(csv, predictions["path"].to_list())
    return rows, attach_labels(predictions, matched), matched.summary


@pytest.fixture(scope="module")
def report(fairface, tmp_path_factory):
    rows, frame, labels = fairface
    folder = tmp_path_factory.mktemp("report") / "rep"
    page = write_report(frame, summarize(frame, labels), folder / "p.parquet", folder, slice_by=["service_test"],
                        min_group=MIN_GROUP)  # fmt: skip
    return json.loads((folder / "metrics.json").read_text()), page.read_text(), folder


def _wilson(hits: int, n: int) -> tuple[float, float]:
    p = hits / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return centre - half, centre + half


def _binned(rows: list[dict], keep=lambda r: True) -> tuple[int, int]:
    """(inside, rows with a bin) over the rows ``keep`` picks."""
    known = [r for r in rows if r["low"] is not None and keep(r)]
    return sum(_inside(r["pred_age"], r["low"], r["high"]) for r in known), len(known)


def test_the_rounding_rule_at_the_edges():
    frame = pl.DataFrame(
        {"true_age": [None, None, None, None, 31], "true_age_low": [20, 20, 70, 3, None],
         "true_age_high": [29, 29, 120, 9, None], "pred_age": [29.5, 19.5, 69.5, 2.49, 30.0]},
        schema_overrides={"true_age": pl.Int16, "true_age_low": pl.Int16, "true_age_high": pl.Int16},
    )  # fmt: skip
    assert with_age_bins(frame).select(attributes.age_in_bin()).to_series().to_list() == [
        False, True, True, False, None
    ]  # fmt: skip


def test_the_age_bin_share_overall_by_hand(report, fairface):
    rows, _, _ = fairface
    saved, _, _ = report
    hits, n = _binned(rows)
    overall = saved["overall"]
    assert n == N - 1 and overall["n_age_bin"] == n and overall["n_age"] == 0 and overall["age_mae"] is None
    assert overall["age_bin_accuracy"] == pytest.approx(hits / n)
    low, high = _wilson(hits, n)
    assert (overall["age_bin_accuracy_low"], overall["age_bin_accuracy_high"]) == pytest.approx((low, high))


def test_the_age_bin_share_per_slice_and_in_the_fairness_summary(report, fairface):
    rows, frame, _ = fairface
    saved, _, _ = report
    race_of = {r["file"]: OURS.get(r["race7"], 4) if r["race7"] else None for r in rows}
    races = ("White", "Black", "Asian", "Indian", "Others")
    for entry in saved["by_race"]:
        code = races.index(entry["race"])
        hits, n = _binned(rows, lambda r, c=code: race_of[r["file"]] == c)
        assert (entry["n_age_bin"], entry["age_bin_accuracy"]) == (n, pytest.approx(hits / n))
        assert (entry["age_bin_accuracy_low"], entry["age_bin_accuracy_high"]) == pytest.approx(_wilson(hits, n))
    for entry in saved["by_service_test"]:
        hits, n = _binned(rows, lambda r, s=entry["service_test"]: r["service_test"] == s)
        assert (entry["n_age_bin"], entry["age_bin_accuracy"]) == (n, pytest.approx(hits / n))
    # a bin inside one report band slices by it; "more than 70" spans two bands and gives none
    bands = {entry["age_band"]: entry["n_age_bin"] for entry in saved["by_age_band"]}
    assert bands["20-29"] == sum(r["low"] == 20 for r in rows) and "80+" not in bands
    fairness = saved["fairness"]["service_test"]
    assert fairness == json.loads(json.dumps(fairness_summary(frame, "service_test", min_group=MIN_GROUP)))
    for group in fairness["groups"]:
        metric = group["metrics"]["age_bin_accuracy"]
        hits, n = _binned(rows, lambda r, s=group["group"]: r["service_test"] == s)
        assert (metric["n"], metric["value"], metric["interval"]) == (n, pytest.approx(hits / n), "wilson")
        assert (metric["low"], metric["high"]) == pytest.approx(_wilson(hits, n))
    gap = fairness["gaps"]["age_bin_accuracy"]
    values = [g["metrics"]["age_bin_accuracy"]["value"] for g in fairness["groups"]]
    assert gap["gap"] == pytest.approx(max(values) - min(values)) and gap["gap_low"] is not None


def test_the_page_and_the_terminal_show_the_age_bin_share(report, fairface):
    saved, page, _ = report
    share = f"{100 * saved['overall']['age_bin_accuracy']:.1f}%"
    card = re.search(r"age in the right bin</span><b>([^<]+)</b>", page)
    assert card and card.group(1) == share and "age MAE</span>" not in page  # no MAE card without ages in years
    assert "rounded to whole years" in page and ">age in bin<" in page  # the rule, the slice tables' column
    assert "<th>age MAE</th>" not in page  # no ages in years: no MAE column
    # the "more than 70" rows have no age band: the band table's heading says how to group them by their bin
    unbanded = saved["fairness"]["age_band"]["n_unsliced"]
    assert unbanded == sum(r["low"] in (None, 70) for r in fairface[0]) > 0  # with the one row without an age
    assert f"{unbanded} without a value (no age, or a bin across two bands: --slice-by true_age_low" in page
    out = Console(record=True, width=200)
    out.print(headline_metrics(saved["overall"]))
    text = out.export_text()
    assert f"in bin {share}" in text and re.search(rf"age bin\s+│\s+{N - 1}\s", text)


def test_the_labels_block_on_the_page(report, fairface):
    _, _, labels = fairface
    _, page, _ = report
    block = page[page.index("<h2>Labels file</h2>") : page.index("<h2>Fairness summary</h2>")]
    counts = re.findall(r"<td>(\d+)</td>", block.split("</table>")[0])
    assert counts == ["91", "90", "0", "1", "3"]  # rows read, matched, without labels, naming no input, problems
    assert "fairface_label_val.csv" in block and "East Asian → Asian" in block and "Middle Eastern → Others" in block
    problems = re.findall(r"<tr><td>(\d+)</td><td class='l'>(\w+)</td><td class='value'>([^<]*)</td>", block)
    assert problems == [("5", "age", "abc"), ("7", "gender", "x"), ("9", "race", "martian")]
    assert "not a number of years" in block and "(3; their labels left empty)" in block
    assert labels["problem_count"] == 3 and "service_test" in block


def test_the_labels_block_counts_problems_beyond_the_first(tmp_path):
    lines = ["path,age,gender"] + [f"/p/{i}.jpg,{-i - 1},male" for i in range(PROBLEMS_KEPT + 5)]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    summary = load_labels(tmp_path / "l.csv", ["/p/0.jpg", "/p/1.jpg", "/p/other.jpg"]).summary
    block = labels_html(summary)
    assert f"the first {PROBLEMS_KEPT} of {PROBLEMS_KEPT + 5}" in block and "negative age" in block
    assert len(re.findall(r"<td class='reason'>", block)) == PROBLEMS_KEPT
    assert "Races mapped" not in block  # no mapping applied: none stated
    assert labels_html(None) == ""


def _reliability(rows: list[dict], key: str, bins: int = 10) -> list[dict]:
    """Reliability bins by hand: (bin, n, mean confidence, observed share), sorted by confidence."""
    found: dict[int, list] = {}
    for r in rows:
        confidence, hit = r[key]
        found.setdefault(min(int(confidence * bins), bins - 1), []).append((confidence, hit))
    table = [
        {"bin": b, "n": len(v), "confidence": sum(c for c, _ in v) / len(v), "observed": sum(h for _, h in v) / len(v)}
        for b, v in found.items()
    ]
    return sorted(table, key=lambda row: row["confidence"])


def test_per_group_calibration_bins_and_figures(report, fairface):
    _, frame, _ = fairface
    saved, page, folder = report
    calibration = saved["group_calibration"]
    assert set(calibration) == {"race", "gender", "age_band", "service_test"}
    entry = calibration["service_test"]
    assert entry["attributes"] == ["gender", "race"] and entry["bins"] == 10 and entry["min_group"] == MIN_GROUP
    top = [max(row) for row in frame.select(RACE_PROB_COLUMNS).rows()]
    rows = [
        {"service_test": s, "gender": None if g is None else (p, g == 1), "race": None if t is None else (c, t == r)}
        for s, p, g, c, t, r in zip(frame["service_test"], frame["p_female"], frame["true_gender"], top,
                                    frame["true_race"], frame["pred_race"], strict=True)
    ]  # fmt: skip
    for group in entry["groups"]:
        mine = [r for r in rows if r["service_test"] == group["group"]]
        assert group["n"] == len(mine)
        for key in ("gender", "race"):
            expected = _reliability([r for r in mine if r[key] is not None], key)
            assert [b["bin"] for b in group[key]] == [b["bin"] for b in expected]
            for ours, theirs in zip(group[key], expected, strict=True):
                assert ours == pytest.approx(theirs)
    # slicing by gender draws no gender curve; groups under min_group are listed, not drawn
    assert calibration["gender"]["attributes"] == ["race"] and "share female is 0 or 1" in calibration["gender"]["note"]
    assert all(g["n"] >= MIN_GROUP for g in calibration["age_band"]["groups"])
    assert calibration["age_band"]["too_few"] and all(g["n"] < MIN_GROUP for g in calibration["age_band"]["too_few"])
    for attribute in calibration:
        name = calibration[attribute]["figure"]
        assert name == f"calibration_by_{attribute}.png" and (folder / name).stat().st_size > 0
        assert re.search(rf"<img class='plot' alt='calibration_by_{attribute}' src='data:image/png;base64,", page)
    assert "<h2>Calibration per group</h2>" in page and "<select id='cal-pick'>" in page


def test_a_label_column_named_like_markup_is_escaped_on_the_page(fairface, tmp_path):
    _, frame, labels = fairface
    frame = frame.rename({"service_test": "cam<b>&x"})
    page = write_report(frame, summarize(frame, labels), tmp_path / "p.parquet", tmp_path / "rep",
                        slice_by=["cam<b>&x"], min_group=MIN_GROUP).read_text()  # fmt: skip
    assert "<th class='l'>cam&lt;b&gt;&amp;x</th>" in page and "cam<b>" not in page


def test_an_age_predicted_as_a_bin_is_right_when_it_is_the_labelled_bin_or_holds_the_labelled_age():
    """Another tool's bins (FairFace's classifier): against a labelled bin, the same bin; against an age in years,
    a bin that holds it. Nothing to compare where neither side is a bin, or the prediction is missing."""
    frame = with_age_bins(
        pl.DataFrame(
            {
                "true_age": [None, None, 25, 25, 75, None, 40, None],
                "true_age_low": [20, 20, None, None, None, 70, None, 20],
                "true_age_high": [29, 29, None, None, None, 120, None, 29],
                "pred_age": [None, None, None, None, None, None, 41.0, None],
                "pred_age_low": [20, 30, 20, 30, 70, 70, None, None],
                "pred_age_high": [29, 39, 29, 39, 120, 120, None, None],
            },
            schema_overrides={"pred_age": pl.Float32}
            | {
                c: pl.Int16 for c in ("true_age", "true_age_low", "true_age_high", "pred_age_low", "pred_age_high")
            },  # fmt: skip
        )
    )
    judged = frame.select(attributes.age_bin_known(), attributes.age_in_bin()).rows()
    assert [known for known, _ in judged] == [True, True, True, True, True, True, False, False]
    assert [hit for _, hit in judged] == [True, False, True, False, True, True, None, None]
    assert frame.select(attributes.age_bin_exprs()).row(0) == (6, pytest.approx(4 / 6))


def test_a_report_of_fairface_classifier_bins_against_fairface_labels(tmp_path):
    """The audit the two FairFace files make: the classifier's predicted bins against the labelled bins."""
    rows = [("train/1.jpg", "20-29", "20-29"), ("train/2.jpg", "30-39", "40-49"), ("train/3.jpg", "more than 70",
            "more than 70"), ("train/4.jpg", "3-9", "3-9"), ("train/5.jpg", "60-69", "more than 70")]  # fmt: skip
    labels, predictions = tmp_path / "fairface_label_val.csv", tmp_path / "fairface_out.csv"
    labels.write_text("file,age,gender,race,service_test\n" + "".join(f"{f},{t},Male,White,True\n" for f, t, _ in rows))
    predictions.write_text("face_name_align,race,gender,age\n" + "".join(f"{f},White,Male,{p}\n" for f, _, p in rows))
    result = CliRunner().invoke(
        app, ["report", str(predictions), "--labels", str(labels), "--report", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    overall = json.loads((tmp_path / "r" / "metrics.json").read_text())["overall"]
    assert (overall["n_age_bin"], overall["age_bin_accuracy"], overall["n_age"]) == (5, pytest.approx(3 / 5), 0)
    assert re.search(r"age bin\s+│\s+5\s+│\s+in bin 60\.0%", result.output)
    assert "in the right bin" in (tmp_path / "r" / "report.html").read_text()
