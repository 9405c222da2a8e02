"""`faceattr-batch synth`: a labelled synthetic face set from the conditional generator.

Writes N JPEGs named UTKFace-style (so ``index``, ``predict`` and ``fid --by`` read them unchanged) and a
``manifest.parquet`` with the requested attributes, seed and model per file. Attributes come from a balanced
grid (every gender x race x age band equally), from fixed values, or from a real index's joint distribution.
Image i's noise depends only on (seed, i), so the same command writes the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.labels import AGE_BANDS, GENDERS, RACES, gender_code, race_code
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import write_parquet_atomically
from faceattr_batch.models.sampling import write_samples

MANIFEST = "manifest.parquet"
MAX_SYNTH_AGE = 100  # the generator saw few faces older; ages above are clamped in the grid


@dataclass(frozen=True)
class SynthOptions:
    n: int
    out_dir: Path
    model: str | None = None  # None = the shipped generator; a train-gen RUN_DIR or a generator file
    genders: tuple[int, ...] | None = None  # fixed values; None = balanced
    races: tuple[int, ...] | None = None
    ages: tuple[int, int] | None = None  # inclusive range
    match: Path | None = None  # an index Parquet whose (gender, race, age) rows are sampled
    size: int | None = None  # written resolution; None = the generator's own
    truncation: float = 1.0  # noise scale (< 1 trades variety for typical faces)
    seed: int = 0
    batch_size: int = 256
    quality: int = 95
    overwrite: bool = False
    progress: bool = True


def parse_choices(text: str | None, kind: str) -> tuple[int, ...] | None:
    """'female' / 'asian,black' / '0,1' -> codes; raises FaceattrError naming the allowed values."""
    if text is None:
        return None
    convert = gender_code if kind == "gender" else race_code
    try:
        return tuple(sorted({convert(part) for part in text.split(",") if part.strip()}))
    except ValueError as err:
        allowed = GENDERS if kind == "gender" else RACES
        raise FaceattrError(f"--{kind} {text!r}: {err}; allowed: {', '.join(allowed)}") from None


def parse_age_range(text: str | None) -> tuple[int, int] | None:
    """'30..40' or '35' -> (low, high) inclusive."""
    if text is None:
        return None
    low, _, high = text.partition("..")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise FaceattrError(f"--age {text!r}: use an age (35) or a range (30..40)") from None
    if not 0 <= bounds[0] <= bounds[1] <= MAX_SYNTH_AGE:
        raise FaceattrError(f"--age {text!r}: ages must satisfy 0 <= low <= high <= {MAX_SYNTH_AGE}")
    return bounds


def conditions(options: SynthOptions) -> pl.DataFrame:
    """The (gender, race, age) of every image to write, in order."""
    rng = np.random.default_rng(options.seed)
    n = options.n
    if options.match is not None:
        try:
            real = pl.read_parquet(options.match, columns=["gender", "race", "age"]).drop_nulls()
        except Exception as err:
            raise FaceattrError(f"--match {options.match}: not a readable index Parquet ({err})") from None
        if real.height == 0:
            raise FaceattrError(f"--match {options.match}: no labelled rows")
        picked = real[rng.integers(0, real.height, n)]
        return picked.with_columns(pl.col("age").clip(0, MAX_SYNTH_AGE)).select(
            pl.col("gender").cast(pl.Int64), pl.col("race").cast(pl.Int64), pl.col("age").cast(pl.Int64)
        )
    genders = options.genders or tuple(range(len(GENDERS)))
    races = options.races or tuple(range(len(RACES)))
    if options.ages:
        low, high = options.ages
        bands = [(low, high)]
    else:
        bands = [(max(lo, 1), min(hi, MAX_SYNTH_AGE)) for _, lo, hi in AGE_BANDS]
    cells = [(g, r, band) for g in genders for r in races for band in bands]
    # A balanced grid: cell i % len(cells), so any prefix of the set is as balanced as it can be.
    picked = [cells[i % len(cells)] for i in range(n)]
    ages = [int(rng.integers(lo, hi + 1)) for _, _, (lo, hi) in picked]
    return pl.DataFrame(
        {"gender": [g for g, _, _ in picked], "race": [r for _, r, _ in picked], "age": ages},
        schema={"gender": pl.Int64, "race": pl.Int64, "age": pl.Int64},
    )


def run(options: SynthOptions) -> dict:
    from faceattr_batch.models.registry import load_generator

    if options.n < 1:
        raise FaceattrError(f"--n {options.n}: must be at least 1")
    if not 0 < options.truncation <= 2:
        raise FaceattrError(f"--truncation {options.truncation}: use a value in (0, 2]")
    if options.size is not None and not 16 <= options.size <= 1024:
        raise FaceattrError(f"--size {options.size}: use 16..1024")
    out = Path(options.out_dir)
    if out.exists() and not out.is_dir():
        raise FaceattrError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not options.overwrite:
            raise FaceattrError(f"{out} is not empty: add --overwrite to replace its synthesized images")
        _remove_previous(out)
    generator, meta = load_generator(options.model)
    wanted = conditions(options)
    manifest = write_samples(
        generator,
        wanted,
        out,
        options.seed,
        options.size,
        options.truncation,
        options.batch_size,
        options.quality,
        options.progress,
    )
    manifest = manifest.with_columns(
        pl.lit(options.seed).alias("seed"),
        pl.lit(str(meta.get("name", "faceattr-gen"))).alias("model_name"),
        pl.lit(str(meta.get("version", __version__))).alias("model_version"),
        pl.lit(options.truncation).alias("truncation"),
        pl.lit(options.size or generator.config.resolution).alias("size"),
    ).select("file", "index", "gender", "race", "age", "seed", "model_name", "model_version", "truncation", "size")
    write_parquet_atomically(manifest, out / MANIFEST)
    counts = manifest.group_by("gender", "race").len().sort("gender", "race")
    return {"out_dir": str(out), "images": manifest.height, "model": meta.get("source"), "cells": counts.to_dicts()}


def _remove_previous(out: Path) -> None:
    """--overwrite removes what an earlier synth run wrote (its manifest's files), never other files."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return  # nothing of ours to remove; new files are written beside the others
    for name in pl.read_parquet(manifest, columns=["file"]).get_column("file"):
        (out / name).unlink(missing_ok=True)
    manifest.unlink()
