"""Reading a large labels CSV (`predict --labels`, `report --labels`) and another tool's predictions CSV: the same
rows written twice, quote-free (read line by line in polars) and with every path quoted (read by Python's csv
module, as any file with a quote is), side by side in one run.

    python benchmarks/bench_labels.py [--rows 1000000]

Prints the seconds of `data.tables.read_csv` and of the whole `read_label_file` (the CSV read, then the labels
parsed and keyed) on each file, and the ratio csv module / polars. Both readings give the same frame (checked).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.data.label_files import read_label_file
from faceattr_batch.data.tables import read_csv


def write_labels(folder: Path, n: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({
        "path": [f"/data/part{i // 10_000:04d}/{i:07d}.jpg" for i in range(n)],
        "gender": rng.choice(["male", "female"], n), "race": rng.choice(["White", "Black", "Asian", "Indian"], n),
        "age": rng.integers(0, 100, n),
    })  # fmt: skip
    plain, quoted = folder / "plain.csv", folder / "quoted.csv"
    frame.write_csv(plain)
    frame.write_csv(quoted, quote_style="non_numeric")
    return plain, quoted


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, quoted = write_labels(Path(tmp), args.rows)
        print(f"{args.rows:,} label rows ({plain.stat().st_size / 1e6:.0f} MB quote-free)")
        seconds = {}
        frames = {}
        for kind, path in (("polars (quote-free)", plain), ("csv module (quoted)", quoted)):
            seconds[kind, "read_csv"], (frames[kind], _) = timed(lambda path=path: read_csv(path, path.name))
            seconds[kind, "read_label_file"], _ = timed(lambda path=path: read_label_file(path))
            print(
                f"  {kind:20s} read_csv {seconds[kind, 'read_csv']:6.2f} s   "
                f"read_label_file {seconds[kind, 'read_label_file']:6.2f} s"
            )
        assert frames["polars (quote-free)"].equals(frames["csv module (quoted)"]), "the two readings differ"
        for step in ("read_csv", "read_label_file"):
            ratio = seconds["csv module (quoted)", step] / seconds["polars (quote-free)", step]
            print(f"  {step}: csv module / polars = {ratio:.1f}x")


if __name__ == "__main__":
    main()
