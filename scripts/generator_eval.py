"""The generator's diversity and age figures of issue 21, against real faces of the same conditions.

    python scripts/generator_eval.py --index utk.parquet [--split RUN_DIR/split.parquet] [--model GEN] \
        [--per-condition 64] [--worst N --of OLD/diversity.csv | --no-diversity] [--truncation 1.2] \
        [--real-features FILE.npz] [--judge ATTR_MODEL] [--rare "female Indian 70+" ...] [-o /tmp/geneval]

1. Diversity: for every gender x race x age band cell with at least ``--per-condition`` real faces in the index, a
   seeded sample of that many real faces and as many samples drawn at their (gender, race, age); the mean pairwise
   Euclidean distance of their Inception pool3 features (the FID network, both sides area-resized to 64 px as
   ``fid --resize-to 64``), and the ratio fake / real. 1 = as varied as the real faces; the issue's floor 0.8.
   Every cell costs 2 x 64 Inception passes at 299 px (about 12 a second on 2 cores): ``--worst N --of CSV``
   measures only the N worst cells of an earlier run's diversity.csv, to follow them through a training;
   ``--real-features FILE.npz`` keeps the real side's features for the next run (half the passes).
2. Age and agreement: with ``--split`` (a ``train`` RUN_DIR's split.parquet: the shipped attribute models' own
   validation faces, which they never trained on), the validation faces of ages 40 and over and one sample per
   face at its (gender, race, age); the default attribute model (or ``--judge``) reads both. Per band: its mean
   read age of the samples minus that of the real faces (the issue's gap; goal within +-2 years), and over all
   samples the share read as the requested gender and race.

3. Rare conditions (``--rare "GENDER RACE AGES"``, repeatable; AGES as ``70+`` or ``70-79``): conditions with fewer
   real faces than a diversity cell needs (issue 21's old women of rare races, for one). Every real face of the
   condition in the index against ``--rare-samples`` samples drawn at ages taken from those faces (seeded): the same
   mean pairwise distance and ratio. With few real faces the real side is noisy; two generators measured with the
   same index and seed share it, so their ratios compare exactly as their samples' variety does.

Diversity cells and rare conditions also get their colour: per face, the mean HSV saturation of its central 32 x 32
at 64 px (mostly skin), averaged over the condition's real faces and its samples, and the share of faces under 0.2
(a grey or washed-out face; 2-8% of real UTKFace faces per race, old ones no more than young). Issue 21's oldest
samples were drawn paler than the real faces of their condition; ``saturation_fake`` beside ``saturation_real`` and
``grey_fake`` beside ``grey_real`` say by how much.

Prints the tables and writes them as ``diversity.csv``, ``age_gap.csv`` and ``rare.csv`` under ``-o`` (samples kept
there), with a contact sheet per measured condition, ``sheets/<condition>.png``: its real faces (left) beside its
samples.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from faceattr_batch.data.inputs import index_paths
from faceattr_batch.data.labels import GENDERS, RACES, age_band_expr, gender_code, race_code
from faceattr_batch.metrics.features import extract
from faceattr_batch.models.inception import load_inception
from faceattr_batch.models.registry import load_generator
from faceattr_batch.models.sampling import write_samples
from faceattr_batch.pipelines.predict import PredictOptions
from faceattr_batch.pipelines.predict import run as predict
from faceattr_batch.pipelines.synth import SynthOptions

OLD_BANDS = ("40-49", "50-59", "60-69", "70-79", "80+")
GREY = 0.2  # central saturation under which a face reads grey (2-8% of real UTKFace faces per race)


def mean_pairwise_distance(features: np.ndarray) -> float:
    """The mean Euclidean distance over all pairs of rows."""
    squares = (features.astype(np.float64) ** 2).sum(axis=1)
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * features @ features.T, 0))
    upper = np.triu_indices(len(features), k=1)
    return float(distances[upper].mean())


def central_saturation(paths: list[str], size: int = 64) -> np.ndarray:
    """Per image, area-resized to ``size`` px: the mean HSV saturation (0-1) of its central half-width square, where
    a chip's skin is: a face drawn grey or pale reads low, and its background does not count."""
    low, high = size // 4, size - size // 4
    values = []
    for file in paths:
        face = Image.open(file).convert("RGB").resize((size, size), Image.Resampling.BOX).convert("HSV")
        values.append(np.asarray(face, dtype=np.float32)[low:high, low:high, 1].mean() / 255)
    return np.array(values)


def colour_table(drawn: dict[str, tuple[list[str], list[str]]]) -> pl.DataFrame:
    """Per condition (real paths, sample paths): both sides' mean central saturation and share of grey faces."""
    rows = []
    for key, (real, fake) in drawn.items():
        row = {"condition": key}
        for side, paths in (("real", real), ("fake", fake)):
            saturation = central_saturation(paths)
            row[f"saturation_{side}"] = float(saturation.mean())
            row[f"grey_{side}"] = float((saturation < GREY).mean())
        rows.append(row)
    return pl.DataFrame(rows)


def labelled_index(index: Path) -> pl.DataFrame:
    table = pl.read_parquet(index).with_columns(file=pl.Series(index_paths(index)))
    table = table.filter(pl.col("age").is_not_null() & pl.col("gender").is_not_null() & pl.col("race").is_not_null())
    return table.with_columns(band=age_band_expr(pl.col("age")).cast(pl.String))


def draw(generator, wanted: pl.DataFrame, folder: Path, *, seed: int, truncation: float) -> list[str]:
    """One sample per row of ``wanted`` (gender, race, age), written under ``folder``; their paths in order.
    ``main`` binds the generator, seed and truncation once (``sample``), and the measurements call that."""
    folder.mkdir(parents=True, exist_ok=True)
    conditions = wanted.select(pl.col("gender", "race").cast(pl.Int64), pl.col("age").clip(0, 100).cast(pl.Int64))
    samples = write_samples(generator, conditions, folder, seed, None, truncation, 256, 95, False)
    return [str(folder / name) for name in samples["file"]]


def contact_sheet(real: list[str], fake: list[str], path: Path, size: int = 64, columns: int = 8) -> None:
    """Real faces in a grid on the left, samples on the right, ``size`` px each, a white gutter between."""
    rows = -(-max(len(real), len(fake)) // columns)
    sheet = Image.new("RGB", ((2 * columns) * size + size // 2, rows * size), "white")
    for side, paths in enumerate((real, fake)):
        left = side * (columns * size + size // 2)
        for i, file in enumerate(paths):
            face = Image.open(file).convert("RGB").resize((size, size), Image.Resampling.BOX)
            sheet.paste(face, (left + (i % columns) * size, (i // columns) * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def diversity(
    table: pl.DataFrame,
    sample,
    per_condition: int,
    out: Path,
    seed: int,
    only: set[str] | None = None,
    real_cache: Path | None = None,
) -> pl.DataFrame:
    """The diversity table, worst first; ``only``: the condition names to measure (None = every cell);
    ``real_cache``: an .npz keeping the real faces' features between runs (``cached_features``)."""
    cells = table.group_by("gender", "race", "band").len().filter(pl.col("len") >= per_condition).sort("gender", "race")
    drawn = {}
    for gender, race, band, _ in cells.iter_rows():
        key = f"{GENDERS[gender]} {RACES[race]} {band}"
        if only is not None and key not in only:
            continue
        real = table.filter((pl.col("gender") == gender) & (pl.col("race") == race) & (pl.col("band") == band))
        real = real.sample(per_condition, seed=seed)
        fake = sample(real, out / "diversity" / key.replace(" ", "_"))
        contact_sheet(real["file"].to_list(), fake, out / "sheets" / f"{key.replace(' ', '_')}.png")
        drawn[key] = (real["file"].to_list(), fake)
    network = load_inception()
    sides = {"real": cached_features(*side_paths(drawn, 0), network, real_cache)}
    sides["fake"] = features(*side_paths(drawn, 1), network)
    ratios = ratio_table(sides, list(drawn)).drop("n_real")
    return ratios.join(colour_table(drawn), on="condition").sort("ratio")


def side_paths(drawn: dict[str, tuple[list[str], list[str]]], side: int) -> tuple[list[str], list[str]]:
    """One side's paths of every condition (side 0: real, 1: samples) in order, and the condition of each path."""
    pairs = [(file, key) for key, both in drawn.items() for file in both[side]]
    return [file for file, _ in pairs], [key for _, key in pairs]


def ratio_table(sides: dict, conditions: list[str]) -> pl.DataFrame:
    """Per condition: its real and fake features' mean pairwise distances and their ratio fake / real."""
    rows = []
    for key in conditions:
        real, fake = (mean_pairwise_distance(sides[s][key]) for s in ("real", "fake"))
        n_real = len(sides["real"][key])
        rows.append({"condition": key, "n_real": n_real, "real": real, "fake": fake, "ratio": fake / real})
    return pl.DataFrame(rows)


def parse_condition(text: str) -> tuple[int, int, int, int]:
    """'female Indian 70+' -> (1, 3, 70, 200); 'male Asian 80-89' -> (0, 2, 80, 89)."""
    try:
        gender, race, ages = text.split()
        low, _, high = ages.removesuffix("+").partition("-")
        return gender_code(gender), race_code(race), int(low), int(high) if high else 200
    except ValueError as err:
        expected = "expected GENDER RACE AGES, as 'female Indian 70+' or 'male Asian 80-89'"
        raise SystemExit(f"--rare {text!r}: {expected} ({err})") from None


def rare_diversity(table: pl.DataFrame, sample, conditions: list[str], n_samples: int, out: Path, seed: int):
    """``diversity`` for conditions too rare for a cell: all their real faces against ``n_samples`` samples."""
    drawn = {}
    for key in conditions:
        gender, race, low, high = parse_condition(key)
        real = table.filter(
            (pl.col("gender") == gender) & (pl.col("race") == race) & pl.col("age").is_between(low, high)
        )
        if real.height < 2:
            raise SystemExit(f"--rare {key!r}: {real.height} real face(s) in the index; a distance needs 2")
        wanted = real.sample(n_samples, with_replacement=True, seed=seed)
        fake = sample(wanted, out / "rare" / key.replace(" ", "_"))
        contact_sheet(real["file"].to_list(), fake, out / "sheets" / f"rare_{key.replace(' ', '_')}.png")
        drawn[key] = (real["file"].to_list(), fake)
    network = load_inception()
    sides = {"real": features(*side_paths(drawn, 0), network), "fake": features(*side_paths(drawn, 1), network)}
    return ratio_table(sides, conditions).join(colour_table(drawn), on="condition", maintain_order="left")


def features(paths: list[str], keys: list[str], network) -> dict[str, np.ndarray]:
    """Pool3 features of ``paths`` at 64 px, grouped by their ``keys``."""
    stats, errors = extract(paths, network, resize_to=64, labels=keys, workers=1, progress=True)
    if errors:
        raise SystemExit(f"{sum(errors.values())} images could not be decoded: {errors}")
    return {key: stats[key].reservoir for key in dict.fromkeys(keys)}


def cached_features(paths: list[str], keys: list[str], network, cache: Path | None) -> dict[str, np.ndarray]:
    """``features``, read from ``cache`` when it holds these very paths (the real side is the same in every run
    with the same index, seed and --per-condition: half of a full run's Inception passes), else computed into it."""
    if cache is not None and cache.is_file():
        saved = np.load(cache)
        if saved["paths"].tolist() == paths:
            return {key: saved[f"cell:{key}"] for key in dict.fromkeys(keys)}
    found = features(paths, keys, network)
    if cache is not None:
        np.savez(cache, paths=np.array(paths), **{f"cell:{key}": value for key, value in found.items()})
    return found


def age_gap(table: pl.DataFrame, split: Path, sample, out: Path, judge: str | None) -> tuple[pl.DataFrame, dict]:
    val = pl.read_parquet(split).filter(pl.col("split") == "val").select("path")
    real = table.join(val, on="path").filter(pl.col("band").is_in(OLD_BANDS)).sort("path")
    fake_paths = sample(real, out / "age")
    read = {}
    for side, paths in (("real", real["file"].to_list()), ("fake", fake_paths)):
        output = out / f"{side}.parquet"
        output.unlink(missing_ok=True)
        predict(PredictOptions(inputs=tuple(paths), output=output, faces="chips", model=judge, progress=False))
        read[side] = pl.read_parquet(output).filter(pl.col("error").is_null())
    requested = real.select("band", "gender", "race", "age").with_columns(path=pl.Series(fake_paths))
    fake = read["fake"].join(requested.rename({"gender": "want_gender", "race": "want_race"}), on="path")
    real_read = read["real"].join(real.select(pl.col("file").alias("path"), "band"), on="path")
    gaps = (
        fake.group_by("band")
        .agg(n=pl.len(), fake_read=pl.col("pred_age").mean(), requested=pl.col("age").mean())
        .join(real_read.group_by("band").agg(real_read=pl.col("pred_age").mean()), on="band")
        .with_columns(gap=pl.col("fake_read") - pl.col("real_read"))
        .sort("band")
    )
    agreement = {
        "gender": float((fake["pred_gender"] == fake["want_gender"]).mean()),
        "race": float((fake["pred_race"] == fake["want_race"]).mean()),
        "n": fake.height,
    }
    return gaps, agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--split", type=Path, help="a train RUN_DIR's split.parquet: the age gap on its val faces")
    parser.add_argument("--model", help="generator file or train-gen RUN_DIR (default: the shipped one)")
    parser.add_argument("--per-condition", type=int, default=64)
    parser.add_argument("--worst", type=int, help="measure diversity only in the N worst conditions of --of")
    parser.add_argument("--of", type=Path, help="an earlier run's diversity.csv (with --worst)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--truncation", type=float, default=SynthOptions.truncation, help="noise scale, as synth --truncation"
    )
    parser.add_argument("--real-features", type=Path, help="an .npz keeping the real side's features between runs")
    parser.add_argument("--no-diversity", action="store_true", help="the age gap and agreement only")
    parser.add_argument("--judge", help="attribute model that reads the ages (predict --model; default: the shipped)")
    parser.add_argument("--rare", action="append", default=[], help="a rare condition, as 'female Indian 70+'")
    parser.add_argument("--rare-samples", type=int, default=32, help="samples per --rare condition")
    parser.add_argument("-o", "--out", type=Path, default=Path("/tmp/geneval"))
    args = parser.parse_args()

    args.out = args.out.resolve()  # predict writes absolute paths; the samples are joined to their conditions on them
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    table = labelled_index(args.index)
    generator, meta = load_generator(args.model)
    print(f"generator: {meta.get('source')}")
    if (args.worst is None) != (args.of is None):
        parser.error("--worst and --of go together")
    only = None if args.of is None else set(pl.read_csv(args.of).sort("ratio").head(args.worst)["condition"])
    sample = functools.partial(draw, generator, seed=args.seed, truncation=args.truncation)
    if not args.no_diversity:
        ratios = diversity(table, sample, args.per_condition, args.out, args.seed, only, args.real_features)
        ratios.write_csv(args.out / "diversity.csv")
        with pl.Config(tbl_rows=200, tbl_cols=-1, tbl_width_chars=200, float_precision=3):
            print(f"diversity, {args.per_condition} faces a side, mean pairwise pool3 distance (worst first)")
            print(ratios)
    if args.rare:
        rare = rare_diversity(table, sample, args.rare, args.rare_samples, args.out, args.seed)
        rare.write_csv(args.out / "rare.csv")
        with pl.Config(tbl_rows=200, tbl_cols=-1, tbl_width_chars=200, float_precision=3):
            print(f"rare conditions: every real face of each against {args.rare_samples} samples")
            print(rare)
    if args.split:
        gaps, agreement = age_gap(table, args.split, sample, args.out, args.judge)
        gaps.write_csv(args.out / "age_gap.csv")
        with pl.Config(float_precision=2):
            print(f"age: {args.judge or 'the default model'}'s mean read age of samples minus of real validation faces")
            print(gaps)
        print(f"agreement on {agreement['n']} samples: gender {agreement['gender']:.1%}, race {agreement['race']:.1%}")


if __name__ == "__main__":
    main()
