"""Build a model's seen-images file (``models/seen_images.py``) from an index and a training split.

    python scripts/seen_images.py --index utk.parquet --split RUN_DIR/split.parquet \\
        -o faceattr_batch/weights/seen_images.parquet

``--index``: an ``index --hash`` Parquet (``path``, ``sha256``: the SHA-256 of each file's bytes); ``--split``: the
``split.parquet`` a ``train`` RUN_DIR holds (``path``, ``split`` train/val). They are joined on ``path``: an index
row outside the split (the names ``index`` rejected) gets no role; a split row outside the index is an error (its
hash would be missing, and the file would understate what the model saw). Every shipped attribute model (default
and fast, their .pt and .onnx) was trained on the one split of MODEL_CARD.md (17,074 training / 1,890 validation
faces, duplicate groups whole, seed 0), so one file serves them all; the shipped one was made from
``utk.parquet`` and ``distil80/split.parquet``. Hashes only: no pixel and no file name leaves this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from faceattr_batch.models.seen_images import seen_images_table, write_seen_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="index Parquet with path and sha256")
    parser.add_argument("--split", type=Path, required=True, help="a train RUN_DIR's split.parquet (path, split)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the seen-images Parquet to write")
    args = parser.parse_args()

    index = pl.read_parquet(args.index, columns=["path", "sha256"])
    split = pl.read_parquet(args.split, columns=["path", "split"])
    joined = split.join(index, on="path", how="left")
    missing = joined.filter(pl.col("sha256").is_null())
    if missing.height:
        raise SystemExit(f"{missing.height} split rows have no sha256 in the index (first: {missing['path'][0]})")
    table = seen_images_table(joined["sha256"], joined["split"])
    write_seen_images(table, args.out)
    images = joined["split"].value_counts(sort=True)
    roles = table["role"].value_counts(sort=True)
    print(f"{args.out}: {table.height} hashes ({args.out.stat().st_size / 1e3:.1f} kB)")
    print("images by split: " + ", ".join(f"{s} {n}" for s, n in images.iter_rows()))
    print("distinct hashes by role: " + ", ".join(f"{r} {n}" for r, n in roles.iter_rows()))
    print(f"index rows without a role: {index.join(split, on='path', how='anti').height}")


if __name__ == "__main__":
    main()
