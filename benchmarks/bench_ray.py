"""Local engine vs Ray engine, images/s side by side on the same images (predict; ``--fid`` adds fid features).

    nice -n 10 python benchmarks/bench_ray.py [--images ../shared/data/utkface] [--n 8000] [--fid 200]

Both engines run ``predict.run`` over the same first N images (symlinked into a temporary folder), the same
model and batch size; the Ray engine on a local instance sized to this machine, one node. Ray's start-up
(``ray.init``) is timed apart and left out of its images/s; its actor start-up is in it, as the local engine's
worker start-up is in its own. Prints images/s of each, ray/local (goal >= 0.8 on 2 cores) and the largest
difference between the two output files' values. ``--fid N``: FID feature extraction of N images (``--save-stats``
only), local then Ray, images/s each, the largest difference between the two saved means and the FID between
the two saved statistics (0 when the engines agree). Also the decode rate of one CPU for each stage's input
(``--decode`` images), the figure that says how many CPUs feed a GPU.

``--model`` as predict takes it (default: the shipped default model).
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from bench_predict import link_folder

from faceattr_batch.data.batches import decode_batch
from faceattr_batch.data.decode import load_chip
from faceattr_batch.data.inputs import list_images
from faceattr_batch.engines import ray as ray_engine
from faceattr_batch.metrics.fid_stats import frechet_distance
from faceattr_batch.metrics.resize import load_for_inception
from faceattr_batch.models.registry import resolve_attr_source
from faceattr_batch.models.runtime import ModelRunner
from faceattr_batch.pipelines import fid
from faceattr_batch.pipelines.predict import PredictOptions, run
from faceattr_batch.schema import FLOAT_OUTPUTS

REPO = Path(__file__).resolve().parents[1]


def bench_decode(paths: list[str], size: int) -> dict:
    """Decode images/s on one CPU, in this process, for each engine stage's input: the CPUs a GPU needs."""
    figures = {}
    for name, load in (("chip", functools.partial(load_chip, size=size)), ("fid", load_for_inception)):
        started = time.perf_counter()
        decode_batch(load, 0, paths)
        figures[f"decode_{name}_images_per_s_per_cpu"] = round(len(paths) / (time.perf_counter() - started), 1)
    return figures


def bench_predict(folder: Path, work: Path, model: Path, args) -> dict:
    common = {"inputs": (str(folder),), "model": str(model), "batch_size": args.batch_size, "progress": False}
    local = run(PredictOptions(output=work / "local.parquet", **common))
    on_ray = run(PredictOptions(output=work / "ray.parquet", engine="ray", concurrency=args.concurrency, **common))
    a, b = pl.read_parquet(local.output), pl.read_parquet(on_ray.output)
    same_rows = a["path"].to_list() == b["path"].to_list() and a["error"].equals(b["error"])
    diff = (a.select(FLOAT_OUTPUTS) - b.select(FLOAT_OUTPUTS)).select(pl.all().abs().max()).row(0)
    return {
        "images": local.images,
        "local_images_per_s": round(local.images_per_second, 1),
        "ray_images_per_s": round(on_ray.images_per_second, 1),
        "ray_over_local": round(on_ray.images_per_second / local.images_per_second, 3),
        "same_rows": same_rows,
        "max_value_diff": max(d or 0.0 for d in diff),
        "runtime": local.model["runtime"],
    }


def bench_fid(folder: Path, work: Path, args) -> dict:
    speeds, stats = {}, {}
    for engine in ("local", "ray"):
        out = work / f"{engine}.npz"
        options = fid.FidOptions(save_stats=out, engine=engine, progress=False)
        started = time.perf_counter()
        result = fid.compute(folder, None, options)
        speeds[engine] = result.n_real / (time.perf_counter() - started)
        with np.load(out) as saved:
            stats[engine] = (saved["mu"], saved["sigma"])
    between, _ = frechet_distance(*stats["local"], *stats["ray"])  # 0 if the engines agree
    return {
        "fid_images": args.fid,
        "fid_local_images_per_s": round(speeds["local"], 2),
        "fid_ray_images_per_s": round(speeds["ray"], 2),
        "fid_ray_over_local": round(speeds["ray"] / speeds["local"], 3),
        "fid_max_mean_diff": float(np.abs(stats["local"][0] - stats["ray"][0]).max()),
        "fid_between_engines": between,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "utkface"))
    parser.add_argument("--n", type=int, default=8000, help="images for predict")
    parser.add_argument("--fid", type=int, default=0, help="images for fid feature extraction (0 = skip)")
    parser.add_argument("--decode", type=int, default=500, help="images for the one-CPU decode rates")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=None, help="Ray model actors (default: the engine's)")
    parser.add_argument("--model", default=None, help="as predict --model (default: the shipped default)")
    args = parser.parse_args()

    paths = list_images(args.images)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        ray = ray_engine.connect(None)
        figures = {"ray_start_s": round(time.perf_counter() - started, 2), "cpus": ray.cluster_resources()["CPU"]}
        model = resolve_attr_source(args.model)
        figures["model"] = str(model)
        figures |= bench_decode(
            paths[: args.decode], ModelRunner.load(str(model), torch.device("cpu"), "torch", 1).input_size
        )
        figures |= bench_predict(link_folder(work / "predict", paths, args.n), work, model, args)
        if args.fid:
            figures |= bench_fid(link_folder(work / "fid", paths, args.fid), work, args)
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
