"""The audit of issue 19 end to end on the validation faces: labels from a CSV, a slice of the user's own, another
tool's table compared with ours.

    python scripts/audit_demo.py --index utk.parquet --split RUN_DIR/split.parquet -o /tmp/audit

1. Links the split's validation faces under neutral names (``face_00001.jpg``), so no label comes from a name.
2. Writes ``labels.csv`` as a user would: string labels in mixed case, a made-up ``source`` column (seeded), a few
   unreadable values (gender "x", race "martian", age "abc" and -3) and a row for a file that is not an input.
3. ``predict`` with the default model and with ``--model fast``, both ``--labels labels.csv --slice-by source``
   with a report each.
4. The fast model's predictions rewritten in deepface's column names (``img_path``, ``dominant_gender`` Man/Woman,
   ``gender.Woman`` in percent, ``dominant_race`` lower case, ``race.<class>`` in percent, ``age``): the stand-in
   for another tool's table, since no other tool runs here.
5. ``report default.parquet --compare deepface.csv --labels labels.csv --slice-by source``.

Prints each command's summary; the reports lie under ``-o``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.data.inputs import index_paths

SOURCES = ("studio", "web", "phone")
BAD_ROWS = (("gender", "x"), ("race", "martian"), ("age", "abc"), ("age", "-3"))


def link_faces(index: Path, split: Path, folder: Path) -> pl.DataFrame:
    """The validation faces as ``face_NNNNN.jpg`` symlinks; returns name, path and labels."""
    table = pl.read_parquet(index).with_columns(real=pl.Series(index_paths(index)))
    val = pl.read_parquet(split).filter(pl.col("split") == "val").select("path")
    faces = table.join(val, on="path").sort("path")
    number = pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(5)
    faces = faces.with_columns(file=pl.format("face_{}.jpg", number))
    folder.mkdir(parents=True, exist_ok=False)
    for real, name in faces.select("real", "file").iter_rows():
        os.symlink(real, folder / name)
    return faces


def write_labels(faces: pl.DataFrame, out: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cases = (str.lower, str.upper, str.title)
    rows = []
    for file, gender, race, age in faces.select("file", "gender_label", "race_label", "age").iter_rows():
        case = cases[rng.integers(len(cases))]
        rows.append([file, case(str(gender)), case(str(race)), str(age), SOURCES[rng.integers(len(SOURCES))]])
    for row, (column, value) in zip(rows[:: len(rows) // len(BAD_ROWS)], BAD_ROWS, strict=False):
        row[("file", "gender", "race", "age").index(column)] = value
    rows.append(["not_an_input.jpg", "female", "White", "30", "web"])
    frame = pl.DataFrame(rows, schema=["file", "gender", "race", "age", "source"], orient="row")
    frame.write_csv(out)


def as_deepface(predictions: Path, out: Path) -> None:
    """Our predictions in deepface's column names and conventions (percentages, Man/Woman, lower-case races)."""
    frame = pl.read_parquet(predictions).filter(pl.col("error").is_null())
    races = {"white": "p_white", "black": "p_black", "asian": "p_asian", "indian": "p_indian"}
    table = frame.select(
        img_path=pl.col("path"),
        dominant_gender=pl.when(pl.col("pred_gender") == 1).then(pl.lit("Woman")).otherwise(pl.lit("Man")),
        **{"gender.Woman": pl.col("p_female") * 100, "gender.Man": (1 - pl.col("p_female")) * 100},
        dominant_race=pl.col("pred_race_label").cast(pl.String).str.to_lowercase().replace("others", "middle eastern"),
        **{f"race.{name}": pl.col(column) * 100 for name, column in races.items()},
        **{"race.middle eastern": pl.col("p_others") * 100},
        age=pl.col("pred_age").round(0),
    )
    table.write_csv(out)


def run(*args: str) -> None:
    command = [sys.executable, "-m", "faceattr_batch", *args]
    print("$ faceattr-batch " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="the index --hash Parquet the split came from")
    parser.add_argument("--split", type=Path, required=True, help="a train RUN_DIR's split.parquet")
    parser.add_argument("-o", "--out", type=Path, required=True, help="a new folder for everything written")
    args = parser.parse_args()

    faces = link_faces(args.index, args.split, args.out / "faces")
    labels = args.out / "labels.csv"
    write_labels(faces, labels)
    print(f"{faces.height} validation faces linked; labels in {labels}")
    for model in ("default", "fast"):
        run("predict", str(args.out / "faces"), "-o", str(args.out / f"{model}.parquet"), "--model", model,
            "--labels", str(labels), "--slice-by", "source", "--report", str(args.out / f"report-{model}"))  # fmt: skip
    as_deepface(args.out / "fast.parquet", args.out / "deepface.csv")
    run("report", str(args.out / "default.parquet"), "--compare", str(args.out / "deepface.csv"),
        "--labels", str(labels), "--slice-by", "source", "--report", str(args.out / "report-compare"))  # fmt: skip


if __name__ == "__main__":
    main()
