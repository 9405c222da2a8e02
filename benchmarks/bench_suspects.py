"""Suspect labels against injected errors (issue 20): precision and recall of the suspect flag, and precision of the
top 50, per attribute, on predictions of faces the model never trained on.

    python benchmarks/bench_suspects.py PREDICTIONS.parquet [--seed 0] [--share 0.05]

PREDICTIONS: a ``predict`` Parquet with true labels of out-of-sample faces (e.g. the validation faces of
``scripts/audit_demo.py``: ``/tmp/audit/default.parquet``). A seeded copy of its labels gets ``--share`` of the
genders flipped, of the races moved to another class and of the ages moved by 15-40 years (up or down, kept in
0..116); ``metrics.suspects.suspect_labels`` then flags rows, scored against the injected ones. The issue's floor:
recall >= 0.7 at precision >= 0.5 for each attribute; goal: recall >= 0.85 at precision >= 0.7.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from faceattr_batch.metrics.suspects import suspect_labels

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--share", type=float, default=0.05)
    args = parser.parse_args()

    frame = pl.read_parquet(args.predictions).filter(pl.col("error").is_null())
    noisy, changed = inject(frame, args.share, args.seed)
    flags, summary = suspect_labels(noisy)
    print(f"{frame.height} faces, {args.share:.0%} of each attribute's labels made wrong (seed {args.seed})")
    print(f"{'attribute':<10}{'injected':>9}{'flagged':>9}{'precision':>11}{'recall':>8}{'top-50 precision':>18}")
    for attribute, injected in changed.items():
        flagged = flags[f"{attribute}_suspect"].fill_null(False).to_numpy()
        hits = int((flagged & injected).sum())
        scores = flags[f"{attribute}_score"].fill_null(-np.inf).to_numpy()
        top = np.argsort(-scores, kind="stable")[:TOP]
        precision = hits / flagged.sum() if flagged.sum() else float("nan")
        print(
            f"{attribute:<10}{int(injected.sum()):>9}{int(flagged.sum()):>9}{precision:>11.2f}"
            f"{hits / injected.sum():>8.2f}{injected[top].mean():>18.2f}"
        )
    print({a: {k: summary[a][k] for k in ("examined", "flagged", "reason")} for a in changed})


if __name__ == "__main__":
    main()
