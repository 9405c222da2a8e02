"""Issue 21's protocol for one generator in one command, rebuilt from the repository and the shared folder alone.

    python scripts/generator_protocol.py --model GEN --cache /work/runs/protocol -o OUT \
        [--truncation 1.2] [--lead] [--shared ../shared/data/utkface]

The run folders have been lost between sessions three times, each time with the files the protocol reads; this
script makes them again from what the repository ships, once, in ``--cache``:

- ``utk.parquet``: ``index --hash`` of ``--shared``;
- ``split.parquet`` (``path``, ``split``): each face's role joined from ``faceattr_batch/weights/seen_images.parquet``
  by SHA-256, the shipped attribute models' split (17,074 train, 1,890 val; the 3 names ``index`` rejects have none);
  ``gen_train.parquet`` and ``val_index.parquet``: the index's rows of each side (``train-gen`` trains on the first);
- ``val_stats64.npz``: the validation faces' FID statistics, area-resized to 64 px;
- ``judge_pair.pt``: the Inception pair, the default ensemble less its ``fast`` member (temperatures kept), the
  second judge of the age gap: ``train-gen --teacher fast`` trains against ``fast``, which the default model holds.

Then, under ``-o``: FID / KID of 5,000 ``synth --match`` samples of the validation faces' label mix (seed 0) against
those faces; ``generator_eval.py``'s diversity over its 64 cells (not with ``--lead``), the seven rare conditions
(32 samples each), the grey share of the oldest Black faces (64 samples each) and the age gap with the default
model; the age gap again with the pair. Every figure goes to ``protocol.json``; the tables print as they come.
Without ``--lead``, ``protocol.json``'s ``verdict`` holds each measured line of the ship rule (``ship_verdict``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

import generator_eval  # this folder's; python puts a script's own folder first on sys.path
import polars as pl
import torch

from faceattr_batch.data.inputs import index_paths
from faceattr_batch.io.atomic import write_json
from faceattr_batch.models.registry import load_generator
from faceattr_batch.pipelines.fid import FidOptions, compute
from faceattr_batch.pipelines.index import IndexOptions
from faceattr_batch.pipelines.index import run as index
from faceattr_batch.pipelines.synth import SynthOptions
from faceattr_batch.pipelines.synth import run as synth

WEIGHTS = Path(__file__).resolve().parent.parent / "faceattr_batch" / "weights"
RARE = (
    "female Indian 70+",
    "female Asian 70+",
    "female Others 60+",
    "female Black 80+",
    "male Asian 80+",
    "male Black 80+",
    "male Indian 80+",
)
OLDEST_BLACK = ("female Black 80+", "male Black 80+")
MATCH_SAMPLES = 5000
# the ship rule (GENERATOR_CARD, gen18's): issue 21's floors by both judges, and no rare condition or grey share
# worse than the shipped v2's (its ratios less 0.05; its grey shares)
AGE_GAP_WITHIN = 5.0
FID_FLOOR = 30.0
DIVERSITY_FLOOR = 0.8
AGREEMENT_FLOORS = {"gender": 0.95, "race": 0.90}
RARE_FLOORS = dict(zip(RARE, (0.73, 0.80, 0.84, 0.97, 0.86, 0.95, 0.81), strict=True))
GREY_CEILINGS = dict(zip(OLDEST_BLACK, (0.28, 0.42), strict=True))


def ship_verdict(figures: dict) -> dict[str, dict]:
    """Each measured line of the ship rule: its value, its bound and whether it holds (the contact sheets, looked
    at, are not here)."""
    lines = {"fid": (figures["fid"], FID_FLOOR, figures["fid"] <= FID_FLOOR)}
    worst = figures["diversity"]["worst"]
    lines["diversity worst cell"] = (worst, DIVERSITY_FLOOR, worst >= DIVERSITY_FLOOR)
    for judge in ("default", "pair"):
        for band, gap in figures[f"age_gap_{judge}"].items():
            lines[f"age gap {band} ({judge})"] = (gap, AGE_GAP_WITHIN, abs(gap) <= AGE_GAP_WITHIN)
        for attribute, floor in AGREEMENT_FLOORS.items():
            share = figures[f"agreement_{judge}"][attribute]
            lines[f"{attribute} agreement ({judge})"] = (share, floor, share >= floor)
    for condition, floor in RARE_FLOORS.items():
        ratio = figures["rare"][condition]
        lines[f"rare {condition}"] = (ratio, floor, ratio >= floor)
    for condition, ceiling in GREY_CEILINGS.items():
        share = figures["grey_share"][condition]
        lines[f"grey share {condition}"] = (share, ceiling, share <= ceiling)
    return {name: {"value": value, "bound": bound, "pass": bool(ok)} for name, (value, bound, ok) in lines.items()}


def split_from_seen(index: pl.DataFrame, seen: pl.DataFrame) -> pl.Series:
    """Per ``index`` row, the role the shipped models gave its bytes: ``train``, ``val``, or null (never seen)."""
    roles = seen.select("sha256", split=pl.col("role").cast(pl.String).replace({"validation": "val"}))
    return index.select("sha256").join(roles, on="sha256", how="left", maintain_order="left")["split"]


def write_rows(index: Path, keep: pl.Series, out: Path) -> None:
    """The rows of an index Parquet where ``keep`` is true, its metadata (the image root) kept."""
    metadata = pl.read_parquet_metadata(index)
    pl.read_parquet(index).filter(keep).write_parquet(out, metadata=metadata)


def pair_judge(default: Path, out: Path) -> None:
    """The default ensemble file less its ``fast`` member (by the name the ensemble recorded), temperatures kept."""
    bundle = torch.load(default, map_location="cpu", weights_only=True)
    names = json.loads(bundle["meta"]["members"])
    keep = [i for i, name in enumerate(names) if "fast" not in name]
    if len(keep) != len(names) - 1:
        raise SystemExit(f"{default}: expected one fast member among {names}")
    bundle["members"] = [bundle["members"][i] for i in keep]
    bundle["meta"] = {**bundle["meta"], "members": json.dumps([names[i] for i in keep])}
    torch.save(bundle, out)


def prepare(cache: Path, shared: Path) -> dict[str, Path]:
    """The protocol's inputs in ``cache``, each made once."""
    cache.mkdir(parents=True, exist_ok=True)
    files = {name: cache / f"{name}.parquet" for name in ("utk", "split", "gen_train", "val_index")}
    files |= {"val_faces": cache / "val_faces", "val_stats": cache / "val_stats64.npz", "pair": cache / "judge_pair.pt"}
    if not files["utk"].is_file():
        index(IndexOptions(root=shared.resolve(), hash=True), files["utk"])
    if not files["split"].is_file():
        utk = pl.read_parquet(files["utk"], columns=["path", "sha256"])
        split = split_from_seen(utk, pl.read_parquet(WEIGHTS / "seen_images.parquet"))
        print(f"split from seen_images.parquet: {dict(split.value_counts().iter_rows())}")
        for side, name in (("train", "gen_train"), ("val", "val_index")):
            write_rows(files["utk"], (split == side).fill_null(False), files[name])
        utk.select("path").with_columns(split=split).drop_nulls().write_parquet(files["split"])
    if not files["val_stats"].is_file():
        files["val_faces"].mkdir(exist_ok=True)
        for path in index_paths(files["val_index"]):
            link = files["val_faces"] / Path(path).name
            if not link.is_symlink():
                link.symlink_to(path)
        compute(files["val_faces"], None, FidOptions(save_stats=files["val_stats"], resize_to=64))
    if not files["pair"].is_file():
        pair_judge(WEIGHTS / "attr_default.pt", files["pair"])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="generator file or train-gen RUN_DIR (default: the shipped one)")
    parser.add_argument("--cache", type=Path, required=True, help="folder of the protocol's inputs, made once")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data/utkface"))
    parser.add_argument("--truncation", type=float, default=SynthOptions.truncation)
    parser.add_argument("--lead", action="store_true", help="no diversity over the 64 cells (the lead check)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()

    os.environ.setdefault("TQDM_MININTERVAL", "5")
    files = prepare(args.cache, args.shared)
    out = args.out.resolve()
    figures: dict = {"model": args.model or "shipped", "truncation": args.truncation}

    matched = out / "match"
    synth(
        SynthOptions(
            n=MATCH_SAMPLES,
            out_dir=matched,
            model=args.model,
            match=files["val_index"],
            truncation=args.truncation,
            overwrite=True,
        )
    )
    fid = compute(files["val_stats"], matched, FidOptions(resize_to=64))
    figures["fid"], figures["kid"] = fid.fid, fid.kid_mean
    print(f"FID {fid.fid:.2f} (KID {fid.kid_mean:.4f} +- {fid.kid_std:.4f}), {fid.n_fake} samples, {fid.n_real} real")

    table = generator_eval.labelled_index(files["utk"])
    generator, _ = load_generator(args.model)
    sample = functools.partial(generator_eval.draw, generator, seed=0, truncation=args.truncation)
    if not args.lead:
        cells = generator_eval.diversity(table, sample, 64, out, 0, real_cache=args.cache / "real_div.npz")
        cells.write_csv(out / "diversity.csv")
        figures["diversity"] = {
            "worst": cells["ratio"].min(),
            "worst_cell": cells["condition"][0],
            "median": cells["ratio"].median(),
            "under_0.8": int((cells["ratio"] < 0.8).sum()),
        }
    rare = generator_eval.rare_diversity(table, sample, list(RARE), 32, out, 0)
    rare.write_csv(out / "rare.csv")
    figures["rare"] = dict(zip(rare["condition"], rare["ratio"], strict=True))
    colour = generator_eval.rare_diversity(table, sample, list(OLDEST_BLACK), 64, out / "colour", 0)
    figures["grey_share"] = dict(zip(colour["condition"], colour["grey_fake"], strict=True))
    for judge, name in ((None, "default"), (str(files["pair"]), "pair")):
        gaps, agreement = generator_eval.age_gap(table, files["split"], sample, out / name, judge)
        gaps.write_csv(out / f"age_gap_{name}.csv")
        figures[f"age_gap_{name}"] = dict(zip(gaps["band"], gaps["gap"], strict=True))
        figures[f"agreement_{name}"] = agreement
    if not args.lead:
        figures["verdict"] = ship_verdict(figures)
        failed = [name for name, line in figures["verdict"].items() if not line["pass"]]
        print(
            "ship rule: " + (f"fails {', '.join(failed)}" if failed else "passes (the contact sheets still to look at)")
        )
    write_json(out / "protocol.json", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
