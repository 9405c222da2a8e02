"""`predict` speed and memory, measured side by side in one run on the same images.

    nice -n 10 python benchmarks/bench_predict.py [--images ../shared/data/utkface] [--n 4000] [--memory]

1. decode + resize only (``batches.iter_batches`` + ``decode.load_chip``, the same worker count as predict);
2. the model alone on pre-decoded uint8 batches (predict's runtime, and torch beside it);
3. a naive loop: open, preprocess, forward one image, append (on ``--naive`` images);
4. ``faceattr-batch predict`` as a whole process (start-up included), and its own in-loop images/s.
Prints images/s, the CPU ideal 1 / (1/decode + 1/model) (decode and model share the cores), predict/ideal
(goal >= 0.8) and predict/naive (goal >= 20). ``--splits`` also times predict with other worker/thread splits.
``--memory``: peak RSS of the predict process at 10k and 100k images (the folder repeated via symlinks in a
temporary folder; nothing is copied), goal 100k <= 1.2 x 10k.

``--model`` takes what ``predict --model`` takes (default: the shipped default). Inputs are symlinked into a
temporary folder (outside the repository) to take a subset.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.decode import load_chip
from faceattr_batch.data.inputs import list_images
from faceattr_batch.models.registry import resolve_attr_source
from faceattr_batch.models.runtime import ModelRunner, split_cores

REPO = Path(__file__).resolve().parents[1]


def link_folder(folder: Path, paths: list[str], count: int) -> Path:
    """``count`` symlinks to ``paths`` (cycled; repeats get a numbered prefix so names still parse)."""
    folder.mkdir(parents=True)
    for i in range(count):
        source = paths[i % len(paths)]
        repeat = i // len(paths)
        name = os.path.basename(source) if repeat == 0 else f"r{repeat}/{os.path.basename(source)}"
        target = folder / name
        target.parent.mkdir(exist_ok=True)
        os.symlink(source, target)
    return folder


def bench_decode(paths, size, batch_size, workers) -> float:
    load = functools.partial(load_chip, size=size)
    start = time.perf_counter()
    count = sum(len(b.ok) for b in iter_batches(paths, load, batch_size, workers))
    return count / (time.perf_counter() - start)


def bench_model(runner: ModelRunner, batches: list[np.ndarray]) -> float:
    runner.infer(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        runner.infer(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def bench_naive(model_path: Path, paths: list[str], size: int, threads: int) -> float:
    from faceattr_batch.models.registry import load_attr_model

    torch.set_num_threads(threads)
    model, _ = load_attr_model(model_path)
    rows = []
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        with torch.no_grad():
            out = model.infer(torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous())
        rows.append({"path": path, "p_female": float(out.p_female[0]), "age": float(out.age_mean[0])})
    return len(rows) / (time.perf_counter() - start)


def run_predict(folder: Path, out: Path, model: Path, extra: list[str]) -> dict:
    """Time `faceattr-batch predict` as a whole process; peak RSS from a fresh wrapper's RUSAGE_CHILDREN."""
    command = [sys.executable, "-m", "faceattr_batch", "predict", str(folder), "-o", str(out), "-m", str(model)]
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'wall': time.perf_counter() - t, 'rc': p.returncode, 'out': p.stdout,"
        " 'err': p.stderr[-2000:], 'maxrss_kib': rss}))\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *command, "--json", *extra], capture_output=True, text=True)
    result = json.loads(done.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"predict failed: {result['err']}")
    result["summary"] = json.loads(result.pop("out"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "utkface"))
    parser.add_argument("--n", type=int, default=0, help="images to use (0 = all)")
    parser.add_argument("--naive", type=int, default=300, help="images for the naive per-image loop")
    parser.add_argument("--model-images", type=int, default=2048, help="pre-decoded images for the model alone")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--splits", default="", help="extra predict runs, e.g. '1x1,1x2,2x1,0x2' (workers x threads)")
    parser.add_argument("--memory", action="store_true", help="peak RSS at 10k and 100k images")
    args = parser.parse_args()

    paths = list_images([args.images])
    paths = paths[: args.n] if args.n else paths
    workers, threads = split_cores("cpu", args.workers, args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        model_path = resolve_attr_source(args.model)
        runner = ModelRunner.load(str(model_path), torch.device("cpu"), "auto", threads)
        size = runner.input_size
        print(f"{len(paths)} images from {args.images}; model: {model_path} ({size}px); runtime {runner.runtime}")
        print(f"cores {os.cpu_count()}, decode workers {workers}, model threads {threads}, batch {args.batch_size}")

        decode = bench_decode(paths, size, args.batch_size, workers)
        print(f"1. decode + resize only      {decode:8.1f} images/s")

        sample = [load_chip(p, size) for p in paths[: args.model_images]]
        batches = [np.stack(sample[i : i + args.batch_size]) for i in range(0, len(sample), args.batch_size)]
        model_speed = bench_model(runner, batches)
        print(f"2. model alone ({runner.runtime:11s}) {model_speed:8.1f} images/s")
        if runner.runtime != "torch":
            torch_runner = ModelRunner.load(str(model_path), torch.device("cpu"), "torch", threads)
            print(f"   model alone (torch)       {bench_model(torch_runner, batches):8.1f} images/s")

        naive = bench_naive(model_path, paths[: args.naive], size, threads)
        print(f"3. naive per-image loop      {naive:8.1f} images/s  ({min(args.naive, len(paths))} images)")

        folder = link_folder(tmp / "inputs", paths, len(paths))
        flags = ["--workers", str(workers), "--threads", str(threads), "-b", str(args.batch_size)]
        whole = run_predict(folder, tmp / "out.parquet", model_path, flags)
        process_speed = len(paths) / whole["wall"]
        loop_speed = whole["summary"]["images_per_second"]
        print(f"4. predict, whole process    {process_speed:8.1f} images/s  ({whole['wall']:.1f} s incl. start-up)")
        print(f"   predict, its own timer    {loop_speed:8.1f} images/s  (listing to finalize)")

        ideal = 1 / (1 / decode + 1 / model_speed)
        print(f"ideal 1/(1/decode+1/model)   {ideal:8.1f} images/s")
        own = loop_speed / ideal
        print(f"predict / ideal              {process_speed / ideal:8.2f}   (goal >= 0.8; own timer {own:.2f})")
        print(f"predict / naive              {process_speed / naive:8.1f}x  (goal >= 20)")

        for split in filter(None, args.splits.split(",")):
            w, t = (int(v) for v in split.split("x"))
            flags = ["--workers", str(w), "--threads", str(t), "-b", str(args.batch_size)]
            other = run_predict(folder, tmp / f"out_{split}.parquet", model_path, flags)
            print(f"   split {w} workers x {t} threads: {len(paths) / other['wall']:8.1f} images/s (whole process)")

        if args.memory:
            all_paths = list_images([args.images])
            rss = {}
            for count in (10_000, 100_000):
                many = link_folder(tmp / f"many_{count}", all_paths, count)
                flags = ["--workers", str(workers), "--threads", str(threads), "-b", str(args.batch_size)]
                result = run_predict(many, tmp / f"many_{count}.parquet", model_path, flags)
                rss[count] = result["maxrss_kib"] / 1024
                print(
                    f"peak RSS at {count:>7,} images: {rss[count]:7.1f} MiB  "
                    f"({count / result['wall']:.1f} images/s whole process)"
                )
            print(f"RSS 100k / 10k               {rss[100_000] / rss[10_000]:8.2f}   (goal <= 1.2)")


if __name__ == "__main__":
    main()
