"""`predict` speed and memory, measured side by side in one run on the same images, for each of ``--models``.

    nice -n 10 python benchmarks/bench_predict.py [--images ../shared/data/utkface] [--n 4000] \
        [--models default fast RUN_DIR ...] [--memory]

Per model: decode + resize only at its input size (``batches.iter_batches`` + ``decode.load_chip``, predict's
worker count); the model alone on pre-decoded uint8 batches, in the runtime predict picks (onnxruntime on the CPU,
its int8 graph where one sits beside the model; then its fp32 export too); ``faceattr-batch predict`` as a whole
process (start-up included); the ideal 1 / (1/decode + 1/model) (decode and model share the cores). A table
then gives each model's figures, predict / ideal (goal >= 0.8) and its whole-process speed over the first model's.
For the first model also: torch beside onnxruntime, a naive per-image loop (``--naive`` images), ``--splits`` (other
worker/thread splits) and ``--memory`` (peak RSS at 10k and 100k images, the folder repeated via symlinks;
goal 100k <= 1.2 x 10k). ``--models`` takes what ``predict --model`` takes. Inputs are symlinked into a
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
from faceattr_batch.models.export import export_onnx
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
        rows.append({"path": path, "p_female": float(out.p_female[0]), "age": float(out.age_median[0])})
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


def bench_one(name: str, paths: list[str], args, workers: int, threads: int, tmp: Path, decoded: dict) -> dict:
    """One model: the decode ceiling at its input size, the model alone on pre-decoded batches (the runtime predict
    picks: onnxruntime, int8 where an int8 export sits beside the model; then its fp32 export too), and ``predict``
    as a whole process."""
    model_path = resolve_attr_source(name)
    runner = ModelRunner.load(str(model_path), torch.device("cpu"), "auto", threads)
    size = runner.input_size
    quantized = "int8" if "quantization" in getattr(runner.model, "properties", {}) else "fp32"
    if size not in decoded:
        decoded[size] = bench_decode(paths, size, args.batch_size, workers)
    sample = [load_chip(p, size) for p in paths[: args.model_images]]
    batches = [np.stack(sample[i : i + args.batch_size]) for i in range(0, len(sample), args.batch_size)]
    model_speed = bench_model(runner, batches)
    fp32_speed = model_speed
    if quantized == "int8":  # the same model's fp32 graph beside it, exported here
        fp32_path = export_onnx(str(model_path), tmp / f"{model_path.stem}-fp32.onnx")["path"]
        fp32_speed = bench_model(ModelRunner.load(str(fp32_path), torch.device("cpu"), "auto", threads), batches)
    folder = tmp / "inputs"
    if not folder.exists():
        link_folder(folder, paths, len(paths))
    flags = ["--workers", str(workers), "--threads", str(threads), "-b", str(args.batch_size)]
    whole = run_predict(folder, tmp / f"out_{size}_{model_path.stem}.parquet", model_path, flags)
    return {
        "model": name,
        "input": size,
        "runtime": f"{runner.runtime} {quantized}" if runner.runtime == "onnxruntime" else runner.runtime,
        "decode": decoded[size],
        "model_alone": model_speed,
        "model_fp32": fp32_speed,
        "ideal": 1 / (1 / decoded[size] + 1 / model_speed),
        "predict": len(paths) / whole["wall"],
        "predict_own_timer": whole["summary"]["images_per_second"],
        "wall_s": whole["wall"],
        "path": model_path,
        "runner": runner,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "utkface"))
    parser.add_argument("--n", type=int, default=0, help="images to use (0 = all)")
    parser.add_argument("--naive", type=int, default=300, help="images for the naive per-image loop (0: skip it)")
    parser.add_argument("--model-images", type=int, default=2048, help="pre-decoded images for the model alone")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=["default", "fast"], help="what predict --model takes")
    parser.add_argument("--splits", default="", help="extra predict runs, e.g. '1x1,1x2,2x1,0x2' (workers x threads)")
    parser.add_argument("--memory", action="store_true", help="peak RSS at 10k and 100k images")
    args = parser.parse_args()

    paths = list_images([args.images])
    paths = paths[: args.n] if args.n else paths
    workers, threads = split_cores("cpu", args.workers, args.threads)
    print(f"{len(paths)} images from {args.images}")
    print(f"cores {os.cpu_count()}, decode workers {workers}, model threads {threads}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        decoded: dict[int, float] = {}
        rows = []
        for name in args.models:
            rows.append(bench_one(name, paths, args, workers, threads, tmp, decoded))
            row = rows[-1]
            print(
                f"{row['model']} ({row['input']} px, {row['runtime']}): decode {row['decode']:.0f}, model alone "
                f"{row['model_alone']:.0f} (fp32 {row['model_fp32']:.0f}), ideal {row['ideal']:.0f}, "
                f"predict whole process {row['predict']:.1f} "
                f"images/s ({row['wall_s']:.1f} s incl. start-up; own timer {row['predict_own_timer']:.0f})",
                flush=True,
            )
        first = rows[0]
        print(f"\n{'model':<24}{'input':>6} {'runtime':<18}{'decode':>8}{'model':>8}{'fp32':>8}{'predict':>9}"
              f"{'predict/ideal':>15}{'x ' + first['model']:>14}")  # fmt: skip
        for row in rows:
            versus_ideal, versus_first = row["predict"] / row["ideal"], row["predict"] / first["predict"]
            print(
                f"{row['model']:<24}{row['input']:>6} {row['runtime']:<18}{row['decode']:>8.0f}"
                f"{row['model_alone']:>8.0f}{row['model_fp32']:>8.0f}{row['predict']:>9.1f}{versus_ideal:>15.2f}{versus_first:>14.2f}"
            )

        runner, size = first["runner"], first["input"]
        if runner.runtime != "torch":
            torch_runner = ModelRunner.load(str(first["path"]), torch.device("cpu"), "torch", threads)
            sample = [load_chip(p, size) for p in paths[: args.model_images]]
            batches = [np.stack(sample[i : i + args.batch_size]) for i in range(0, len(sample), args.batch_size)]
            print(f"{first['model']} model alone in torch: {bench_model(torch_runner, batches):.1f} images/s")
        if args.naive:  # 0 skips the naive loop
            naive = bench_naive(first["path"], paths[: args.naive], size, threads)
            count = min(args.naive, len(paths))
            print(f"{first['model']} naive per-image loop: {naive:.1f} images/s ({count} images); "
                  f"predict / naive {first['predict'] / naive:.1f}x")  # fmt: skip
        folder = tmp / "inputs"
        for split in filter(None, args.splits.split(",")):
            w, t = (int(v) for v in split.split("x"))
            flags = ["--workers", str(w), "--threads", str(t), "-b", str(args.batch_size)]
            other = run_predict(folder, tmp / f"out_{split}.parquet", first["path"], flags)
            print(f"   split {w} workers x {t} threads: {len(paths) / other['wall']:8.1f} images/s (whole process)")

        if args.memory:
            all_paths = list_images([args.images])
            rss = {}
            for count in (10_000, 100_000):
                many = link_folder(tmp / f"many_{count}", all_paths, count)
                flags = ["--workers", str(workers), "--threads", str(threads), "-b", str(args.batch_size)]
                result = run_predict(many, tmp / f"many_{count}.parquet", first["path"], flags)
                rss[count] = result["maxrss_kib"] / 1024
                print(
                    f"peak RSS at {count:>7,} images: {rss[count]:7.1f} MiB  "
                    f"({count / result['wall']:.1f} images/s whole process)"
                )
            print(f"RSS 100k / 10k               {rss[100_000] / rss[10_000]:8.2f}   (goal <= 1.2)")


if __name__ == "__main__":
    main()
