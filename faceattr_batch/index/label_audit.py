"""What an index's labels say about the dataset itself: how many images each gender x race x age band cell holds,
and whether its ages were rounded by whoever labelled them (age heaping).

Heaping: people who guess an age favour round numbers (and ages like 26 where a source's defaults sit), so an age
model is judged against labels coarser than its errors. Whipple's index (the demographers' measure, as the UN
uses it) over ages 23 to 62: the share of ages ending in 0 or 5, times 5, in percent; 100 when every final digit
is as common as the others, 500 when every age is a multiple of 5 (the UN's reading: under 105 very accurate,
105-110 fairly, 110-125 approximate, 125-175 rough, over 175 very rough). The ages that stand out most against their
neighbours (each age's count over the mean of the two ages either side) name where the heaps are.
"""

from __future__ import annotations

import itertools

import polars as pl

from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACES

WHIPPLE_AGES = (23, 62)
MIN_WHIPPLE_AGES = 100  # fewer labelled ages in 23..62 give no index: one face moves it by a point or more
MIN_HEAP = 20  # an age with fewer images is not named as a heap: its ratio is noise
HEAPS_SHOWN = 5


def label_cells(table: pl.DataFrame) -> list[dict]:
    """Images per gender x race x age band over the rows with all three labels: every one of the 100 cells, the
    empty ones included, fewest first (ties in label order), where a dataset is too thin to train or judge on."""
    labels = ("gender_label", "race_label", "age_band")
    grid = pl.DataFrame(
        list(itertools.product(GENDERS, RACES, AGE_BAND_NAMES)),
        schema={name: table.schema[name] for name in labels},
        orient="row",
    )
    counts = table.drop_nulls(labels).group_by(labels).len("n")
    cells = grid.join(counts, on=list(labels), how="left").with_columns(pl.col("n").fill_null(0))
    cells = cells.with_row_index("order").sort("n", "order").drop("order")
    return cells.rename({"gender_label": "gender", "race_label": "race"}).to_dicts()


def age_heaping(table: pl.DataFrame) -> dict:
    """Whipple's index over ages 23-62 (None with fewer than ``MIN_WHIPPLE_AGES`` there) and the ``HEAPS_SHOWN``
    ages most over-represented against the two ages either side (at least ``MIN_HEAP`` images, ratio over 1; ages
    within 2 of the youngest or oldest are not judged)."""
    counts = dict(table.drop_nulls("age").group_by("age").len().iter_rows())
    low, high = WHIPPLE_AGES
    in_range = sum(counts.get(age, 0) for age in range(low, high + 1))
    round_ages = sum(counts.get(age, 0) for age in range(low, high + 1) if age % 5 == 0)
    whipple = round(500 * round_ages / in_range, 1) if in_range >= MIN_WHIPPLE_AGES else None
    heaps = []
    youngest, oldest = min(counts, default=0), max(counts, default=0)
    for age, n in sorted(counts.items()):
        neighbours = [counts.get(age + step, 0) for step in (-2, -1, 1, 2)]
        inside = youngest <= age - 2 and age + 2 <= oldest  # at the ends a missing neighbour is no evidence
        if inside and n >= MIN_HEAP and n > (mean := sum(neighbours) / 4):
            heaps.append({"age": age, "n": n, "ratio": round(n / mean, 2) if mean else None})
    heaps.sort(key=lambda heap: (heap["ratio"] is None, heap["ratio"] or 0), reverse=True)  # None: no neighbour
    return {"whipple": whipple, "ages_23_62": in_range, "heaps": heaps[:HEAPS_SHOWN]}


def heaping_text(heaping: dict) -> str:
    """``age_heaping``'s result in words, for the terminal and the dataset page."""
    if heaping["whipple"] is None:
        text = f"too few ages 23-62 ({heaping['ages_23_62']}) for Whipple's index"
    else:
        text = (
            f"Whipple's index {heaping['whipple']:g} over {heaping['ages_23_62']} ages 23-62 (100: no preference for "
            "0s and 5s; 500: every age a multiple of 5; 125-175: rough)"
        )
    heaps = [f"{h['age']} ({h['ratio']:g}x)" if h["ratio"] else f"{h['age']} (no neighbour)" for h in heaping["heaps"]]
    return text + (f"; most heaped, against the ages either side: {', '.join(heaps)}" if heaps else "")
