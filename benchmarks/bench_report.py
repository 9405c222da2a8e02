"""The report's bootstraps over many rows: the fairness summaries (`report`'s race, gender and age-band slicings and
the race x gender x age band cells, 1,000 resamples each) and `report --compare`'s paired intervals, on synthetic
predictions (no image read), at two sizes side by side in one run.

    python benchmarks/bench_report.py [--rows 100000,1000000] [--skip-compare]

Prints the CPU seconds of each part at each size, its seconds per 100,000 rows, and the per-row cost of the
largest size over the smallest's: 1.0 is linear. Each row is drawn 1,000 times per slicing (the bootstrap is exact,
rows resampled within each group), so the floor is about 15 ns a draw on these cores; a superlinear ratio means a
pass over every row per handful of resamples (the code before 2026-12-07: 151 s for the gender slicing alone at
1M rows, against 27 s since the draws go block by block).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.metrics.attributes import SLICE_BY
from faceattr_batch.reporting.compare import Run, compare_runs
from faceattr_batch.reporting.folder import fairness_contents
from faceattr_batch.reporting.summary import labelled_rows
from faceattr_batch.schema import RACE_PROB_COLUMNS, predictions_table


def synthetic_predictions(n: int, seed: int) -> pl.DataFrame:
    """``n`` labelled chip predictions: ages 1-89 read with 6 y of noise, genders right ~90% of the time with
    spread-out P(female), race probabilities drawn at random (so wrong about 60% of the time)."""
    rng = np.random.default_rng(seed)
    true_age = rng.integers(1, 90, n)
    pred_age = (true_age + rng.normal(0, 6, n)).clip(0, 110).astype(np.float32)
    true_gender, true_race = rng.integers(0, 2, n), rng.integers(0, 5, n)
    races = rng.dirichlet(np.ones(5), n).astype(np.float32)
    frame = pl.DataFrame(
        {
            "path": [f"/data/part{i // 10_000:04d}/{i:07d}.jpg" for i in range(n)],
            "p_female": np.clip(true_gender * 0.8 + rng.normal(0.1, 0.2, n), 0, 1).astype(np.float32),
            **{column: races[:, i] for i, column in enumerate(RACE_PROB_COLUMNS)},
            "pred_age": pred_age,
            "age_low": pred_age - 5,
            "age_high": pred_age + 6,
            "true_age": true_age,
            "true_gender": true_gender,
            "true_race": true_race,
            "model_name": "synthetic",
            "model_version": str(seed),
        }
    )
    return predictions_table(frame).with_columns(face_index=pl.lit(0, pl.Int16), framing=pl.lit("chip"))


def cpu_seconds(func, *args, **kwargs) -> float:
    started = time.process_time()
    func(*args, **kwargs)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000,1000000", help="sizes, comma-separated")
    parser.add_argument("--skip-compare", action="store_true", help="time the fairness summaries only")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.rows.split(","))
    parts = ["fairness (4 slicings)"] + ([] if args.skip_compare else ["compare (overall + 3 slicings)"])
    seconds: dict[str, dict[int, float]] = {part: {} for part in parts}
    for n in sizes:
        a = synthetic_predictions(n, seed=0)
        labelled = labelled_rows(a)
        seconds[parts[0]][n] = cpu_seconds(fairness_contents, labelled, list(SLICE_BY), min_group=30)
        if not args.skip_compare:
            b = synthetic_predictions(n, seed=1).with_columns(a.select("path", "true_age", "true_gender", "true_race"))
            runs = (Run(Path("a.parquet"), a), Run(Path("b.parquet"), b))
            seconds[parts[1]][n] = cpu_seconds(compare_runs, *runs, slice_by=SLICE_BY)
        for part in parts:
            value = seconds[part][n]
            print(f"{n:>9,} rows  {part:<32} {value:7.1f} s CPU  ({value / n * 1e5:.2f} s per 100k rows)", flush=True)
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        for part in parts:
            ratio = (seconds[part][large] / large) / (seconds[part][small] / small)
            print(f"per-row cost, {large:,} rows over {small:,}: {part}: {ratio:.2f}x (1.0 is linear)")


if __name__ == "__main__":
    main()
