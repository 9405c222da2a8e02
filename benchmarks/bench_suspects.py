"""Suspect labels against injected errors (issue 20): precision and recall of the suspect flag, and precision of the
top 50, per attribute, on predictions of faces the model never trained on.

    python benchmarks/bench_suspects.py PREDICTIONS.parquet [--seeds 0,1,2,3] [--share 0.05] [--cost 1000]

PREDICTIONS: a ``predict`` Parquet with true labels of out-of-sample faces (e.g. the validation faces of
``scripts/audit_demo.py``: ``/tmp/audit/default.parquet``). A seeded copy of its labels gets ``--share`` of the
genders flipped, of the races moved to another class and of the ages moved by 15-40 years (up or down, kept in
0..116); ``metrics.suspects.suspect_labels`` then flags rows, scored against the injected ones, for each seed and
on average. A flagged row whose label was not injected may still be wrong (the set's own errors): the first line
says how many rows each attribute flags before any injection. The issue's floor: recall >= 0.7 at precision >= 0.5
for each attribute; goal: recall >= 0.85 at precision >= 0.7.

``--cost N``: the issue's cost goal (suspects add under 5% to predict's time), side by side in one run:
``faceattr-batch predict --model fast`` (the fastest model, so the largest share) as a whole process on the first N
images of PREDICTIONS, the report's suspect search (``reporting.suspects_list.find_suspects``) on those N rows, and
on the whole frame repeated to 100,000 rows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.metrics.suspects import suspect_labels
from faceattr_batch.reporting.suspects_list import find_suspects

TOP = 50


def inject(frame: pl.DataFrame, share: float, seed: int) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """``frame`` with ``share`` of each attribute's known labels made wrong; the rows changed, per attribute."""
    rng = np.random.default_rng(seed)
    n = frame.height
    changed, columns = {}, {}
    for attribute in ("gender", "race", "age"):
        known = np.flatnonzero(frame[f"true_{attribute}"].is_not_null().to_numpy())
        rows = rng.choice(known, size=int(round(share * len(known))), replace=False)
        values = frame[f"true_{attribute}"].to_numpy().copy()
        if attribute == "gender":
            values[rows] = 1 - values[rows]
        elif attribute == "race":
            values[rows] = (values[rows] + rng.integers(1, 5, len(rows))) % 5
        else:
            shift = rng.integers(15, 41, len(rows)) * rng.choice([-1, 1], len(rows))
            moved = values[rows] + shift
            moved = np.where((moved < 0) | (moved > 116), values[rows] - shift, moved)  # keep ages possible
            values[rows] = moved
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        changed[attribute] = mask
        columns[f"true_{attribute}"] = pl.Series(values, nan_to_null=True).cast(frame.schema[f"true_{attribute}"])
    return frame.with_columns(**columns), changed


def scores(frame: pl.DataFrame, share: float, seed: int) -> dict[str, tuple[int, float, float, float]]:
    """Per attribute: (flagged, precision, recall, top-50 precision) against the injected errors of ``seed``."""
    noisy, changed = inject(frame, share, seed)
    flags, _ = suspect_labels(noisy)
    result = {}
    for attribute, injected in changed.items():
        flagged = flags[f"{attribute}_suspect"].fill_null(False).to_numpy()
        hits = int((flagged & injected).sum())
        top = np.argsort(-flags[f"{attribute}_score"].fill_null(-np.inf).to_numpy(), kind="stable")[:TOP]
        precision = hits / flagged.sum() if flagged.sum() else float("nan")
        result[attribute] = (int(flagged.sum()), precision, hits / injected.sum(), float(injected[top].mean()))
    return result


def timed(func, *args) -> float:
    started = time.perf_counter()
    func(*args)
    return time.perf_counter() - started


def cost(frame: pl.DataFrame, n: int) -> None:
    """predict's whole-process time on n images beside the suspect search's on their rows and on 100,000 rows."""
    rows = frame.head(n)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "faceattr_batch", "--quiet", "predict", *rows["path"], "--model", "fast"]
        predict_s = timed(subprocess.run, [*command, "-o", str(Path(tmp) / "p.parquet")])
    search_s = min(timed(find_suspects, rows) for _ in range(3))
    large = pl.concat([frame] * -(-100_000 // frame.height)).head(100_000)
    large_s = timed(find_suspects, large)
    print(
        f"cost: predict --model fast, {rows.height} images, whole process {predict_s:.2f} s; suspect search on "
        f"their rows {search_s * 1000:.1f} ms ({search_s / predict_s:.2%} of predict); on 100,000 rows "
        f"{large_s:.2f} s ({large_s / 100_000 * 1e6:.1f} us a row, {large_s / 100_000 / (predict_s / rows.height):.2%}"
        " of predict's time per image)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions")
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated injection seeds")
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--cost", type=int, metavar="N", help="also time predict and the suspect search on N images")
    args = parser.parse_args()

    frame = pl.read_parquet(args.predictions).filter(pl.col("error").is_null())
    _, clean = suspect_labels(frame)
    natural = ", ".join(f"{a} {clean[a]['flagged']}" for a in ("gender", "race", "age"))
    print(f"{frame.height} faces; flagged before any injection: {natural}")
    print(f"{args.share:.0%} of each attribute's known labels made wrong, per seed")
    print(f"{'seed':<6}{'attribute':<10}{'flagged':>8}{'precision':>11}{'recall':>8}{'top-50 precision':>18}")
    runs = {int(seed): scores(frame, args.share, int(seed)) for seed in args.seeds.split(",")}
    for seed, result in runs.items():
        for attribute, (flagged, precision, recall, top) in result.items():
            print(f"{seed:<6}{attribute:<10}{flagged:>8}{precision:>11.2f}{recall:>8.2f}{top:>18.2f}")
    for attribute in ("gender", "race", "age"):
        columns = np.array([runs[seed][attribute] for seed in runs])
        low, high = columns.min(axis=0), columns.max(axis=0)
        print(
            f"{'mean':<6}{attribute:<10}{columns[:, 0].mean():>8.0f}{columns[:, 1].mean():>11.2f}"
            f"{columns[:, 2].mean():>8.2f}{columns[:, 3].mean():>18.2f}   (precision {low[1]:.2f}-{high[1]:.2f}, "
            f"recall {low[2]:.2f}-{high[2]:.2f})"
        )
    if args.cost:
        cost(frame, args.cost)


if __name__ == "__main__":
    main()
