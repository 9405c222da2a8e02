"""The report's plots (matplotlib, an optional heavy import made when a report is drawn): confusion matrices,
predicted vs true age, errors by age band and by race with 95% intervals, calibration (overall, and per group of
each slicing attribute)."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.data.labels import GENDERS, RACES
from faceattr_batch.io.atomic import replacing
from faceattr_batch.metrics.attributes import ECE_BINS

# the files ``draw`` may write (``draw_group_calibration`` adds calibration_by_<attribute>.png)
PLOT_NAMES = ("confusion.png", "age_pred_vs_true.png", "error_by_age_band.png", "error_by_race.png", "calibration.png")


def _plain_text(function):
    """Draw with mathtext off: a group or column whose name holds ``$`` signs (``$0_$10``) is text, not a formula
    that fails to parse. Only while drawing: a Python user's own matplotlib settings are left as they were."""

    @functools.wraps(function)
    def drawn(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return drawn


@_plain_text
def draw(labelled: pl.DataFrame, summary: dict, by: dict, calibration: dict, folder: Path) -> dict[str, Path]:
    """The report's PNG plots into ``folder``: plot name -> path (a plot without data is left out)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    made = {}

    def save(fig, name: str) -> None:
        made[name] = _save(fig, folder / f"{name}.png")

    # an attribute without labels or predictions (another tool's table) gets no panel
    reported = {key for key in ("gender", "race", "age") if summary["overall"][f"n_{key}"]}
    matrices = [(key, names) for key, names in (("gender", GENDERS), ("race", RACES)) if key in reported]
    if matrices:
        ratios = [len(names) for _, names in matrices]
        fig, axes = plt.subplots(1, len(matrices), figsize=(4.4 * sum(ratios) / 3.5, 4.4), squeeze=False,
                                 gridspec_kw={"width_ratios": ratios})  # fmt: skip
        for ax, (key, names) in zip(axes[0], matrices, strict=True):
            _confusion(ax, summary[f"{key}_confusion"], names, key)
        fig.tight_layout()
        save(fig, "confusion")

    ages = labelled.filter(pl.col("true_age").is_not_null() & pl.col("pred_age").is_not_null())
    if ages.height:
        fig, ax = plt.subplots(figsize=(6, 5.2))
        true_age, pred_age = ages["true_age"].to_numpy(), ages["pred_age"].to_numpy()
        top = max(float(true_age.max()), float(pred_age.max()), 10.0) + 2
        if ages.height > 2000:
            hexes = ax.hexbin(true_age, pred_age, gridsize=48, bins="log", cmap="viridis", mincnt=1)
            fig.colorbar(hexes, ax=ax, label="images (log)")
        else:
            ax.scatter(true_age, pred_age, s=8, alpha=0.5)
        ax.plot([0, top], [0, top], color="crimson", lw=1, label="perfect")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="true age", ylabel="predicted age (median)")
        ax.set_title(f"predicted vs true age (MAE {summary['overall']['age_mae']:.2f} y)")
        ax.legend(loc="upper left")
        save(fig, "age_pred_vs_true")

    table = by["age_band"]
    if table.height and "age" in reported:
        fig, ax = plt.subplots(figsize=(8, 3.8))
        _bars(ax, table, "age_band", "age_mae", "age MAE (years)")
        ax.set_title("age error by true age band (95% CI)")
        save(fig, "error_by_age_band")

    table = by["race"]
    panels = [
        (value, label)
        for key, value, label in (
            ("gender", "gender_accuracy", "gender accuracy"),
            ("race", "race_accuracy", "race accuracy"),
            ("age", "age_mae", "age MAE (years)"),
        )
        if key in reported
    ]
    if table.height and panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(13 * len(panels) / 3, 3.8), squeeze=False)
        for ax, (value, label) in zip(axes[0], panels, strict=True):
            _bars(ax, table, "race", value, label)
        fig.suptitle("errors by true race (95% CI)")
        fig.tight_layout()
        save(fig, "error_by_race")

    if not (calibration["gender"].height or calibration["race"].height):  # no probabilities: nothing to plot
        return made
    # a panel per attribute with bins: another tool's table without race probabilities draws no empty one
    curves = (("gender", "P(female)"), ("race", "top race probability"))
    drawn = [(key, label) for key, label in curves if calibration[key].height]
    fig, axes = plt.subplots(1, len(drawn), figsize=(5 * len(drawn), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], drawn, strict=True):
        data = calibration[key]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.plot(data["confidence"], data["observed"], marker="o")
        for x, y, n in data.select("confidence", "observed", "n").iter_rows():
            ax.annotate(str(n), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ece = summary["calibration"][f"{key}_ece"]
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"mean {label} in bin")
        ax.set_ylabel("share female" if key == "gender" else "accuracy")
        # the ECE is the predicted class's (predict.md), not this curve's: the title says so
        ece_text = f"\nECE {ece:.3f}: predicted {key}'s confidence, {ECE_BINS} bins" if ece is not None else ""
        ax.set_title(f"{key} calibration{ece_text}", fontsize=10)
    fig.tight_layout()
    save(fig, "calibration")
    return made


def _confusion(ax, matrix: list[list[int]], names: tuple[str, ...], title: str) -> None:
    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j, i, f"{int(counts[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title} confusion (row-normalised)")


def _bars(ax, table: pl.DataFrame, key: str, value: str, label: str) -> None:
    names = [str(v) for v in table[key].to_list()]
    values = table[value].fill_null(float("nan")).to_numpy().astype(float)
    low = table[f"{value}_low"].fill_null(float("nan")).to_numpy().astype(float)
    high = table[f"{value}_high"].fill_null(float("nan")).to_numpy().astype(float)
    errors = np.clip(np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0), 0.0, None)
    ax.bar(names, values, yerr=errors, capsize=3, color="#4878d0")
    # the rows the value is over (gender_accuracy: n_gender), not the group's images: a label may be missing
    counted = f"n_{value.split('_')[0]}"
    counts = table[counted if counted in table.columns else "n"].to_list()
    for x, (v, n) in enumerate(zip(values, counts, strict=True)):
        if not math.isnan(v):
            ax.annotate(f"n={n}", (x, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    ax.set_ylabel(label)
    ax.tick_params(axis="x", rotation=30)


@_plain_text
def draw_group_calibration(group_calibration: dict[str, dict], folder: Path) -> dict[str, Path]:
    """Slicing attribute -> ``calibration_by_<attribute>.png`` (the name made safe for a file): a panel per
    calibrated attribute (gender: P(female) vs the share female; race: top probability vs accuracy), one
    reliability line per group drawn from metrics.json's ``group_calibration`` bins themselves
    (``folder.group_calibration``). An attribute without any bin (no probabilities, or no group of ``min_group``
    rows) gets no figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    made = {}
    for attribute, entry in group_calibration.items():
        panels = [key for key in entry["attributes"] if any(group[key] for group in entry["groups"])]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.6, 4.2), squeeze=False)
        for ax, key in zip(axes[0], panels, strict=True):
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
            drawn = [group for group in entry["groups"] if group[key]]
            largest = max(b["n"] for group in drawn for b in group[key])
            for group in drawn:
                x, y, n = ([b[field] for b in group[key]] for field in ("confidence", "observed", "n"))
                (line,) = ax.plot(x, y, lw=1.2, label=f"{group['group']} (n={group['n']})")
                # a dot grows with its bin's rows (the panel's largest bin the largest): a jump made by 2 faces
                # reads as small
                sizes = [6 + 90 * math.sqrt(count / largest) for count in n]
                ax.scatter(x, y, s=sizes, color=line.get_color(), zorder=3)
            label = "P(female)" if key == "gender" else "top race probability"
            ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=f"mean {label} in bin")
            ax.set_title(f"{key} calibration by {attribute}")
            ax.set_ylabel("share female" if key == "gender" else "accuracy")
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
        fig.tight_layout()
        path = folder / f"calibration_by_{_file_safe(attribute)}.png"
        stem, number = path.stem, 1
        while path in made.values():  # two names made alike by _file_safe (a numbered one may be a third's name)
            path, number = path.with_stem(f"{stem}_{number}"), number + 1
        made[attribute] = _save(fig, path)
    return made


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with replacing(path) as tmp:  # a rebuilt report never shows half a plot
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "_"


@_plain_text
def age_histogram(table: pl.DataFrame, heaping: dict, path: Path) -> Path:
    """Images per labelled age, one bar a year; multiples of 5 darker and the most heaped ages named, so rounding
    by the labellers shows (``index.label_audit.age_heaping``)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    counts = table.drop_nulls("age").group_by("age").len().sort("age")
    ages, n = counts["age"].to_numpy(), counts["len"].to_numpy()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.bar(ages, n, width=1.0, color=np.where(ages % 5 == 0, "#2a4d9c", "#8fa8dc"))
    for heap in heaping["heaps"]:
        ax.annotate(str(heap["age"]), (heap["age"], heap["n"]), ha="center", va="bottom", fontsize=8)
    whipple = (
        "too few ages for Whipple's index" if heaping["whipple"] is None else f"Whipple's index {heaping['whipple']:g}"
    )
    ax.set(xlabel="labelled age (multiples of 5 darker)", ylabel="images", title=f"images per age ({whipple})")
    return _save(fig, path)
