"""metrics.fairness: per-group metrics, gaps and ratios against Fairlearn's MetricFrame (scikit-learn's metrics per
group) on a seeded synthetic frame; the bootstrap's seeding, coverage of the point values and small-n behaviour;
R² by hand; JSON-ready output."""

from __future__ import annotations

import functools
import json
import tracemalloc

import numpy as np
import polars as pl
import pytest

from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics import attributes
from faceattr_batch.metrics.fairness import METRIC_NAMES, fairness_summary, group_table, weakest_slices
from faceattr_batch.schema import RACE_PROB_COLUMNS, derived_columns, with_age_bins

MIN_GROUP = 30
# group -> (rows, gender accuracy, race accuracy, age error sd); "d" is under MIN_GROUP
GROUPS = {
    "a": (400, 0.95, 0.85, 4.0),
    "b": (250, 0.85, 0.80, 6.0),
    "c": (120, 0.75, 0.70, 9.0),
    "d": (12, 0.5, 0.5, 20.0),
}
RACE_SHARES = [0.4, 0.25, 0.2, 0.1, 0.05]  # some classes fall under MIN_GROUP in the smaller groups


def _group_rows(rng, n: int, gender_acc: float, race_acc: float, age_sd: float) -> dict:
    true_gender = rng.integers(0, 2, n)
    pred_gender = np.where(rng.random(n) < gender_acc, true_gender, 1 - true_gender)
    confidence = rng.uniform(0.5, 1.0, n)
    true_race = rng.choice(5, n, p=RACE_SHARES)
    pred_race = np.where(rng.random(n) < race_acc, true_race, rng.integers(0, 5, n))
    probs = rng.dirichlet(np.full(5, 0.5), n)
    top = probs.argmax(axis=1)  # move each row's top probability onto its predicted race
    rows = np.arange(n)
    probs[rows, top], probs[rows, pred_race] = probs[rows, pred_race], probs[rows, top]
    true_age = rng.integers(1, 90, n)
    return {
        "true_gender": true_gender,
        "pred_gender": pred_gender,
        "p_female": np.where(pred_gender == 1, confidence, 1 - confidence),
        "true_race": true_race,
        "pred_race": pred_race,
        **{name: probs[:, i] for i, name in enumerate(RACE_PROB_COLUMNS)},
        "true_age": true_age,
        "pred_age": np.clip(true_age + rng.normal(1.0, age_sd, n), 0, None),
    }


@functools.cache
def _frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for group, (n, *quality) in GROUPS.items():
        parts.append(pl.DataFrame(_group_rows(rng, n, *quality)).with_columns(source=pl.lit(group)))
    frame = pl.concat(parts).with_columns(
        pl.col("true_gender", "pred_gender", "true_race", "pred_race").cast(pl.Int8),
        pl.col("true_age").cast(pl.Int16),
        pl.col("pred_age", "p_female", *RACE_PROB_COLUMNS).cast(pl.Float32),
    )
    # unknowns: a truth here, a prediction there, and rows in no group
    index = pl.int_range(pl.len())
    frame = frame.with_columns(
        pl.when(index % 17 == 3).then(None).otherwise(pl.col("true_gender")).alias("true_gender"),
        pl.when(index % 13 == 5).then(None).otherwise(pl.col("pred_race")).alias("pred_race"),
        pl.when(index % 11 == 7).then(None).otherwise(pl.col("pred_age")).alias("pred_age"),
        pl.when(index % 97 == 1).then(None).otherwise(pl.col("source")).alias("source"),
    )
    return with_age_bins(frame).with_columns(derived_columns())


@functools.cache
def _summary(seed: int = 0) -> dict:
    return fairness_summary(_frame(), "source", min_group=MIN_GROUP, seed=seed)


def _references() -> dict[str, tuple]:
    """metric -> (attribute, score function(y_true, y_pred), its count's rows as a mask on the known rows)."""
    from fairlearn.metrics import false_negative_rate, false_positive_rate
    from sklearn.metrics import accuracy_score, mean_absolute_error, precision_score, r2_score, recall_score

    refs = {
        "gender_accuracy": ("gender", accuracy_score, lambda t, p: np.ones_like(t, bool)),
        "gender_recall_female": ("gender", functools.partial(recall_score, pos_label=1), lambda t, p: t == 1),
        "gender_recall_male": ("gender", functools.partial(recall_score, pos_label=0), lambda t, p: t == 0),
        "gender_fpr": ("gender", functools.partial(false_positive_rate, pos_label=1), lambda t, p: t == 0),
        "gender_fnr": ("gender", functools.partial(false_negative_rate, pos_label=1), lambda t, p: t == 1),
        "race_accuracy": ("race", accuracy_score, lambda t, p: np.ones_like(t, bool)),
        "age_mae": ("age", mean_absolute_error, lambda t, p: np.ones_like(t, bool)),
        "age_bias": ("age", lambda t, p: float(np.mean(p - t)), lambda t, p: np.ones_like(t, bool)),
        "age_r2": ("age", r2_score, lambda t, p: np.ones_like(t, bool)),
    }
    for code, race in enumerate(("white", "black", "asian", "indian", "others")):
        one = {"labels": [code], "average": "macro", "zero_division": np.nan}
        refs[f"race_recall_{race}"] = ("race", functools.partial(recall_score, **one), lambda t, p, c=code: t == c)
        refs[f"race_precision_{race}"] = (
            "race",
            functools.partial(precision_score, **one),
            lambda t, p, c=code: p == c,
        )
    return refs


@pytest.mark.filterwarnings("ignore:Supplied 'func' had no __name__")
def test_groups_gaps_and_ratios_match_fairlearn_metricframe():
    metrics = pytest.importorskip("fairlearn.metrics")
    summary, frame = _summary(), _frame().filter(pl.col("source").is_not_null())
    groups = {g["group"]: g for g in summary["groups"]}
    assert list(groups) == ["a", "b", "c", "d"]
    for name, (attribute, score, counted) in _references().items():
        known = frame.filter(pl.col(f"true_{attribute}").is_not_null() & pl.col(f"pred_{attribute}").is_not_null())
        truth, pred = (known[f"{side}_{attribute}"].to_numpy() for side in ("true", "pred"))
        if attribute == "age":  # float64, as the summary computes (sklearn would subtract in float32)
            truth, pred = truth.astype(np.float64), pred.astype(np.float64)
        source = known["source"].to_numpy()
        counts = {group: int(counted(truth, pred)[source == group].sum()) for group in groups}
        assert {group: groups[group]["metrics"][name]["n"] for group in groups} == counts, name
        whole = metrics.MetricFrame(metrics=score, y_true=truth, y_pred=pred, sensitive_features=source).by_group
        for group in groups:
            ours = groups[group]["metrics"][name]["value"]
            if counts[group] >= 2:  # R² of one age is undefined for both
                assert ours == pytest.approx(whole[group], rel=1e-9, abs=1e-12), (name, group)
        eligible = [group for group in groups if counts[group] >= MIN_GROUP]
        gap = summary["gaps"][name]
        assert sorted(item["group"] for item in gap["left_out"]) == sorted(set(groups) - set(eligible)), name
        if len(eligible) < 2:
            assert gap["gap"] is None and "fewer than 2 groups" in gap["reason"]
            continue
        keep = np.isin(source, eligible)
        frame_eligible = metrics.MetricFrame(
            metrics=score, y_true=truth[keep], y_pred=pred[keep], sensitive_features=source[keep]
        )
        assert gap["gap"] == pytest.approx(frame_eligible.difference(), rel=1e-9, abs=1e-12), name
        assert (
            gap["max_group"] == frame_eligible.by_group.idxmax()
            and gap["min_group"] == frame_eligible.by_group.idxmin()
        )
        if name != "age_bias":  # a ratio of signed values is withheld
            assert gap["ratio"] == pytest.approx(frame_eligible.ratio(), rel=1e-9), name


def test_ece_per_group_is_the_packages_ece_and_its_gap_is_max_minus_min():
    summary, frame = _summary(), _frame()
    for group in summary["groups"]:
        expected = attributes.calibration_errors(frame.filter(pl.col("source") == group["group"]))
        for name in ("gender_ece", "race_ece"):
            assert group["metrics"][name]["value"] == pytest.approx(expected[name], rel=1e-9)
    for name in ("gender_ece", "race_ece"):
        values = [g["metrics"][name]["value"] for g in summary["groups"] if g["n"] >= MIN_GROUP]
        assert summary["gaps"][name]["gap"] == pytest.approx(max(values) - min(values))
        assert summary["gaps"][name]["ratio"] == pytest.approx(min(values) / max(values))


def test_a_resamples_ece_from_its_column_sums_equals_the_ece_of_the_repeated_rows():
    rng = np.random.default_rng(3)
    confidence, correct = rng.uniform(0, 1, 50), rng.random(50) < 0.6
    counts = rng.integers(0, 4, (3, 50))
    from_sums = attributes.ece_of_sums(counts @ attributes.ece_columns(confidence, correct))
    for row, value in zip(counts, from_sums, strict=True):
        repeated = np.repeat(np.arange(50), row)
        assert value == pytest.approx(attributes.expected_calibration_error(confidence[repeated], correct[repeated]))
    # a NaN confidence is a row that counts for nothing: the bootstrap passes a group's unknown rows, uncopied
    unknown = rng.random(50) < 0.3
    blanked = attributes.ece_of_sums(counts @ attributes.ece_columns(np.where(unknown, np.nan, confidence), correct))
    kept = attributes.ece_of_sums(counts[:, ~unknown] @ attributes.ece_columns(confidence[~unknown], correct[~unknown]))
    assert blanked == pytest.approx(kept)
    assert attributes.expected_calibration_error(np.where(unknown, np.nan, confidence), correct) == pytest.approx(
        attributes.expected_calibration_error(confidence[~unknown], correct[~unknown])
    )
    assert attributes.expected_calibration_error(np.full(5, np.nan), np.ones(5)) is None
    assert np.isnan(attributes.ece_of_sums(np.zeros((1, 50)) @ attributes.ece_columns(confidence, correct))).all()


def test_one_ece_over_many_rows_needs_no_rows_x_bins_matrix():
    """The report's ECE over every labelled row built a (rows x 15) matrix for one set of weights: 160 bytes a row
    (a reviewer's finding); a bincount needs a few arrays of the rows."""
    rng = np.random.default_rng(0)
    confidence, correct = rng.uniform(0, 1, 200_000), rng.random(200_000) < 0.7
    tracemalloc.start()
    value = attributes.expected_calibration_error(confidence, correct)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    from_sums = attributes.ece_of_sums(attributes.ece_columns(confidence, correct).sum(axis=0))
    assert peak < 60 * 200_000 and value == pytest.approx(from_sums, rel=1e-9)


def test_a_group_under_min_group_is_listed_as_too_few_and_never_ranked():
    summary = _summary()
    in_d = _frame().filter(pl.col("source") == "d").height  # 12 rows, less those with no source
    assert summary["too_few"] == [{"group": "d", "n": in_d}]
    assert summary["n_unsliced"] == _frame()["source"].null_count()
    for name, gap in summary["gaps"].items():
        assert "d" in {item["group"] for item in gap["left_out"]}, name
        assert "d" not in (gap["max_group"], gap["min_group"]), name
        assert "d" not in {row["group"] for row in summary["weakest"][name]}, name
    # the small group still has its own figures, with intervals
    small = next(g for g in summary["groups"] if g["group"] == "d")["metrics"]
    assert small["gender_accuracy"]["low"] is not None and small["age_mae"]["low"] is not None


def test_same_seed_same_intervals_and_intervals_hold_the_point_values():
    summary = _summary()
    assert fairness_summary(_frame(), "source", min_group=MIN_GROUP, seed=0) == summary
    other = _summary(seed=1)["gaps"]["age_mae"]
    assert (other["gap_low"], other["gap_high"]) != (
        summary["gaps"]["age_mae"]["gap_low"],
        summary["gaps"]["age_mae"]["gap_high"],
    )
    # ECE left out: resampling inflates it, so a calibrated model's point ECE can sit under its percentile interval
    tolerance = 1e-12  # Wilson's bounds at p = 0 or 1 are a rounding error away from p
    for group in summary["groups"]:
        for name, entry in group["metrics"].items():
            if entry["low"] is not None and not name.endswith("_ece"):
                assert entry["low"] - tolerance <= entry["value"] <= entry["high"] + tolerance, (group["group"], name)
    for name, gap in summary["gaps"].items():
        if gap["gap_low"] is not None and not name.endswith("_ece"):
            assert gap["gap_low"] <= gap["gap"] <= gap["gap_high"], name
            assert gap["significant"] == (gap["gap_low"] > 0)
        if gap["ratio_low"] is not None and not name.endswith("_ece"):
            assert gap["ratio_low"] <= gap["ratio"] <= gap["ratio_high"], name
    # a fixed pair of groups in each resample: the interval can reach below 0, so "significant" means something
    assert summary["gaps"]["gender_accuracy"]["significant"] is True  # 0.95 against 0.75
    assert any(gap["gap_low"] is not None and gap["gap_low"] < 0 for gap in summary["gaps"].values())


def _age_frame(groups: dict[str, tuple[list[int], list[float]]]) -> pl.DataFrame:
    rows = [(name, t, p) for name, (truths, preds) in groups.items() for t, p in zip(truths, preds, strict=True)]
    return pl.DataFrame(rows, schema={"slice": pl.String, "true_age": pl.Int16, "pred_age": pl.Float32}, orient="row")


def test_r2_by_hand_and_where_it_is_undefined():
    frame = _age_frame(
        {
            "four": ([20, 30, 40, 50], [22.0, 29.0, 45.0, 50.0]),
            "same": ([30, 30, 30], [31.0, 29.0, 35.0]),
            "one": ([40], [44.0]),
        }
    )
    groups = {g["group"]: g["metrics"] for g in fairness_summary(frame, "slice", min_group=2)["groups"]}
    # SS_res = 4 + 1 + 25 + 0 = 30; mean 35, SS_tot = 225 + 25 + 25 + 225 = 500
    assert groups["four"]["age_r2"]["value"] == pytest.approx(1 - 30 / 500)
    assert groups["four"]["age_bias"]["value"] == pytest.approx((2 - 1 + 5 + 0) / 4)
    assert groups["same"]["age_r2"]["value"] is None and "SS_tot = 0" in groups["same"]["age_r2"]["reason"]
    assert groups["one"]["age_r2"]["value"] is None and "2 or more" in groups["one"]["age_r2"]["reason"]
    assert groups["one"]["age_mae"] | {"reason": None} == {
        "value": 4.0, "n": 1, "low": None, "high": None, "interval": "t", "reason": None
    }  # fmt: skip
    assert "no interval" in groups["one"]["age_mae"]["reason"]
    assert groups["four"]["gender_accuracy"]["value"] is None and groups["four"]["gender_accuracy"]["reason"]


def test_mae_and_bias_intervals_at_n_2_are_students_t():
    frame = _age_frame(
        {"two": ([20, 50], [23.0, 39.0]), "many": (list(range(20, 60)), [a + 2.0 for a in range(20, 60)])}
    )
    mae = next(g for g in fairness_summary(frame, "slice", min_group=2)["groups"] if g["group"] == "two")["metrics"]
    # errors +3 and -11: MAE 7 (sd of |e| 5.657), bias -4 (sd 9.899); t(0.975, 1 df) = 12.706, so the half-widths
    # are 12.706 sd / sqrt(2): 50.82 and 88.94 (MAE's low end clipped at 0). The normal approximation
    # 7 +- 1.96 * 5.66 / sqrt(2) would claim (-0.8, 14.8), and a bootstrap of two rows (3, 11).
    assert mae["age_mae"]["value"] == pytest.approx(7.0)
    assert (mae["age_mae"]["low"], mae["age_mae"]["high"]) == pytest.approx((0.0, 57.82), abs=0.01)
    assert (mae["age_bias"]["low"], mae["age_bias"]["high"]) == pytest.approx((-92.94, 84.94), abs=0.01)


def test_weakest_slices_rank_by_the_pessimistic_bound():
    summary = _summary()
    accuracy = summary["weakest"]["gender_accuracy"]
    assert [row["group"] for row in accuracy] == ["c", "b", "a"]  # accuracy 0.75, 0.85, 0.95
    lows = {g["group"]: g["metrics"]["gender_accuracy"]["low"] for g in summary["groups"]}
    assert [row["bound"] for row in accuracy] == [lows[g] for g in ("c", "b", "a")]
    mae = weakest_slices(summary, ["age_mae"], k=2)["age_mae"]
    highs = sorted((g["metrics"]["age_mae"]["high"], g["group"]) for g in summary["groups"] if g["n"] >= MIN_GROUP)
    assert [row["group"] for row in mae] == [group for _, group in highs[::-1][:2]]


def test_output_is_json_ready_even_when_degenerate():
    assert json.loads(json.dumps(_summary(), allow_nan=False))["by"] == "source"
    frame = pl.DataFrame({"skin": ["I", "I", "II", None], "true_gender": [1, 0, None, 1], "pred_gender": [1, 1, 0, 0]})
    summary = fairness_summary(frame, "skin", min_group=2)  # no race, age or probabilities at all
    json.dumps(summary, allow_nan=False)
    assert summary["n_unsliced"] == 1 and summary["too_few"] == [{"group": "II", "n": 1}]
    assert summary["groups"][1]["metrics"]["gender_accuracy"] | {"reason": ""} == {
        "value": None, "n": 0, "low": None, "high": None, "interval": "wilson", "reason": ""
    }  # fmt: skip
    assert summary["gaps"]["age_mae"]["gap"] is None and summary["gaps"]["age_mae"]["reason"]
    table = group_table(_summary())
    assert table["group"].to_list() == ["a", "b", "c", "d"] and {*METRIC_NAMES} <= set(table.columns)


def test_bad_arguments_are_refused_with_the_allowed_values():
    with pytest.raises(FaceattrError, match="no column 'tone' to slice by; the columns are: .*source"):
        fairness_summary(_frame(), "tone")
    with pytest.raises(FaceattrError, match="resamples must be at least 1000, not 200"):
        fairness_summary(_frame(), "source", resamples=200)
    with pytest.raises(FaceattrError, match="min_group must be at least 2"):
        fairness_summary(_frame(), "source", min_group=1)


def test_race_precision_is_not_compared_across_slices_of_the_true_race():
    """Inside a true race's group a class's precision is 0 (another race) or 1 (its own) whatever the model does:
    no gap, no ranking; the other slicings keep it."""
    by_race = fairness_summary(_frame(), "true_race_label", min_group=MIN_GROUP)
    for name in ("white", "black", "asian", "indian", "others"):
        gap = by_race["gaps"][f"race_precision_{name}"]
        assert gap["gap"] is None and gap["significant"] is None and "by design" in gap["reason"]
        assert f"race_precision_{name}" not in by_race["weakest"]
    assert by_race["gaps"]["race_accuracy"]["gap"] is not None  # per-race accuracy is each race's recall: compared
    assert _summary()["gaps"]["race_precision_white"]["gap"] is not None


@pytest.mark.parametrize("by", ["true_age_band", "over_50"])
def test_age_r2_is_not_compared_across_slices_of_the_true_age(by):
    """Within an age band the true ages barely spread, so R² there sinks with the band's width whatever the model
    does (the quick start's report ranked "age R² gap 27.5: 3-9 -0.11 vs 70-79 -27.6" a significant gap): no gap,
    no ranking, for age bands and for any slicing that splits the true ages into ranges; the per-group values stay."""
    frame = _frame().with_columns(over_50=pl.col("true_age") > 50)
    by_age = fairness_summary(frame, by, min_group=MIN_GROUP)
    gap = by_age["gaps"]["age_r2"]
    assert gap["gap"] is None and gap["significant"] is None and gap["ratio"] is None
    assert gap["reason"] == "each group holds its own range of true ages: R² within a range is low by design"
    assert "age_r2" not in by_age["weakest"]
    assert all(g["metrics"]["age_r2"]["value"] is not None for g in by_age["groups"] if g["n"] >= MIN_GROUP)
    assert by_age["gaps"]["age_mae"]["gap"] is not None  # error by age band is compared
    for other in ("source", "true_race_label"):  # groups whose true ages overlap
        assert fairness_summary(frame, other, min_group=MIN_GROUP)["gaps"]["age_r2"]["gap"] is not None


@pytest.mark.parametrize("name", ["female", "age2", "hit_white", "race_confidence"])
def test_a_slice_column_named_like_a_working_column_slices_as_any_other(name):
    """A reviewer's finding: a labels column called ``female`` (or a calibration column's name) crashed the summary
    with polars' DuplicateError, or was replaced by the computed column before slicing."""
    renamed = fairness_summary(_frame().rename({"source": name}), name, min_group=MIN_GROUP)
    expected = fairness_summary(_frame(), "source", min_group=MIN_GROUP)
    assert renamed["by"] == name
    assert json.dumps({**renamed, "by": "source"}, sort_keys=True) == json.dumps(expected, sort_keys=True)
