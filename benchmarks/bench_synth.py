"""Generator speed: `synth` images/s (files written) beside the generator alone, and `train-gen` iterations/s.

    python benchmarks/bench_synth.py [--n 10000] [--model shipped untrained-128 RUN_DIR_OR_FILE ...] [--threads 2]
        [--train-resolution 64]

synth: the whole command (`synth.run`: conditions, generation, JPEG encoding, manifest) on N faces at the
generator's own size, beside the generator's forward pass alone on the same batches, for each ``--model`` in
turn (``shipped``: the packaged one; ``untrained-R``: a fresh generator of train-gen's defaults at R px, which costs
what a trained one does: the speed of a size before any run of it exists); goal: 10,000 64-px faces in <= 30 s.
train-gen: for v1's recipe and v2's (today's defaults) at ``--train-resolution``, two runs on the synthesized faces
that differ only in their iteration count, so the difference of their wall times is the training alone (decoding
and set-up cancel).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from faceattr_batch.models.generator import Generator, GeneratorConfig
from faceattr_batch.models.registry import load_generator, save_generator
from faceattr_batch.pipelines.synth import SynthOptions, conditions
from faceattr_batch.pipelines.synth import run as synth_run
from faceattr_batch.pipelines.train_gen import TrainGenOptions
from faceattr_batch.pipelines.train_gen import run as train_gen_run


def generator_only(generator, n: int, batch_size: int = 256) -> float:
    wanted = conditions(SynthOptions(n=n, out_dir=Path("unused")))
    labels = [torch.tensor(wanted.get_column(k).to_list()) for k in ("gender", "race", "age")]
    z = torch.randn(n, generator.config.z_dim, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            generator(z[i : i + batch_size], *(t[i : i + batch_size] for t in labels))
    return n / (time.perf_counter() - start)


# train-gen's options that make v1 (the shipped generator's recipe); v2 is the defaults
RECIPES = {"v1": dict(upsample="transposed", age_bins=0, balance=0.0, r1_gamma=0.0), "v2": {}}


def untrained_generator(resolution: int, folder: Path) -> Path:
    """A fresh generator of train-gen's default networks at ``resolution``, saved as synth reads it."""
    options = TrainGenOptions(source=folder, out_dir=folder, resolution=resolution)
    config = GeneratorConfig.from_dict(vars(options))
    return save_generator(Generator(config).eval(), folder / f"untrained_{resolution}.pt", {"name": "untrained"})


def train_seconds(faces: Path, out: Path, iterations: int, recipe: dict, args) -> float:
    start = time.perf_counter()
    train_gen_run(
        TrainGenOptions(
            source=faces,
            out_dir=out,
            iterations=iterations,
            batch_size=args.batch_size,
            resolution=args.train_resolution,
            sample_every=10**9,
            checkpoint_every=10**9,
            evaluate=False,
            threads=args.threads,
            workers=1,
            progress=False,
            **recipe,
        )
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="faces to synthesize")
    parser.add_argument("--model", nargs="+", default=["shipped"], help="generator files or train-gen RUN_DIRs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30, help="train-gen iterations timed (beyond 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="train-gen batch")
    parser.add_argument("--train-resolution", type=int, default=64, help="train-gen's --resolution")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            if name.startswith("untrained-"):
                model = str(untrained_generator(int(name.removeprefix("untrained-")), Path(tmp)))
            else:
                model = None if name == "shipped" else name
            faces = Path(tmp) / "synth"
            shutil.rmtree(faces, ignore_errors=True)
            start = time.perf_counter()
            result = synth_run(SynthOptions(n=args.n, out_dir=faces, model=model, progress=False))
            synth_s = time.perf_counter() - start
            generator = load_generator(model)[0]
            forward, resolution = generator_only(generator, args.n), generator.config.resolution
            print(
                f"{name}: synth {result['images']} faces at {resolution} px, files written: {synth_s:.1f} s "
                f"= {args.n / synth_s:,.0f} img/s; generator forward alone ({args.threads} threads): "
                f"{forward:,.0f} img/s; synth / forward-only {args.n / synth_s / forward:.2f}x; goal 10,000 faces "
                f"<= 30 s: {'met' if synth_s * 10_000 / args.n <= 30 else 'not met'} "
                f"({synth_s * 10_000 / args.n:.1f} s per 10,000)"
            )

        for recipe, options in RECIPES.items():
            short = train_seconds(faces, Path(tmp) / f"{recipe}-short", 10, options, args)
            long = train_seconds(faces, Path(tmp) / f"{recipe}-long", 10 + args.iterations, options, args)
            per_iteration = (long - short) / args.iterations
            print(
                f"train-gen {recipe} at {args.train_resolution} px (batch {args.batch_size}, {args.threads} threads): "
                f"{1 / per_iteration:.2f} it/s "
                f"= {args.batch_size / per_iteration:,.0f} real images/s"
            )


if __name__ == "__main__":
    main()
