"""The report's plots as drawn: each bar's n is the rows its value is over, a calibration panel only where there are
bins, one file per slicing attribute even when their names make the same file name. Figures caught before saving."""

from __future__ import annotations

import polars as pl
import pytest

from faceattr_batch.reporting import figures

pytest.importorskip("matplotlib")


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the report saves, kept open (the file is still written)."""
    kept, save = [], figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: kept.append(fig) or save(fig, path))
    return kept


def test_a_bar_is_annotated_with_the_rows_its_value_is_over():
    """A reviewer's finding: the gender-accuracy bars said n=28 (the race's images) over 15 labelled genders."""
    import matplotlib.pyplot as plt

    table = pl.DataFrame({
        "race": ["White", "Black"], "n": [28, 20], "n_gender": [15, 8],
        "gender_accuracy": [0.9, 0.75], "gender_accuracy_low": [0.7, 0.4], "gender_accuracy_high": [0.98, 0.95],
    })  # fmt: skip
    fig, ax = plt.subplots()
    figures._bars(ax, table, "race", "gender_accuracy", "gender accuracy")
    assert [text.get_text() for text in ax.texts] == ["n=15", "n=8"]
    plt.close(fig)


def test_calibration_draws_no_panel_without_bins(tmp_path, drawn):
    """A reviewer's finding: a table without race probabilities got an empty "race calibration" panel."""
    bins = pl.DataFrame({"confidence": [0.2, 0.8], "observed": [0.25, 0.7], "n": [10, 12]})
    summary = {"overall": {"n_gender": 22, "n_race": 0, "n_age": 0}, "calibration": {"gender_ece": 0.04}}
    summary["gender_confusion"] = [[9, 2], [1, 10]]
    empty = pl.DataFrame(schema={"confidence": pl.Float64, "observed": pl.Float64, "n": pl.Int64})
    labelled = pl.DataFrame(schema={"true_age": pl.Int64, "pred_age": pl.Float64})
    by = {"race": pl.DataFrame(), "age_band": pl.DataFrame()}
    made = figures.draw(labelled, summary, by, {"gender": bins, "race": empty}, tmp_path)
    assert "calibration" in made
    assert [ax.get_title() for ax in drawn[-1].axes] == [
        "gender calibration\nECE 0.040: predicted gender's confidence, 15 bins"
    ]


def test_slicing_names_made_alike_get_a_figure_each(tmp_path):
    """A reviewer's finding: `a_b_2`, `a b` and `a_b` were given two files, one figure over the other's."""
    group = {"group": "g", "n": 12, "gender": [{"confidence": 0.5, "observed": 0.5, "n": 12}]}
    entry = {"attributes": ["gender"], "groups": [group]}
    made = figures.draw_group_calibration({"a_b_2": entry, "a b": entry, "a_b": entry}, tmp_path)
    assert sorted(path.name for path in made.values()) == [
        "calibration_by_a_b.png", "calibration_by_a_b_1.png", "calibration_by_a_b_2.png"
    ]  # fmt: skip
