"""Attribute model speed: training images/s, CPU inference images/s at batch 256, beside decode-only images/s.

    python benchmarks/bench_train.py [--model default|fast|FILE] [--images ../shared/data/utkface] [--n 2000]
                                     [--threads 2] [--candidates]

Prints one line per figure and the ratios. The inference figure is the model alone on pre-decoded uint8
batches (torch and, where installed, onnxruntime); decode-only is `decode.load_chip` over the same files with
the same number of worker processes, so the two show which one bounds `predict` on this machine. The training
figure is per network (each member of an ensemble).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.decode import load_chip
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.models.registry import load_attr_model, resolve_attr_source
from faceattr_batch.training.data import augment
from faceattr_batch.training.losses import multitask_loss

CANDIDATES = {  # the architectures compared in MODEL_CARD.md
    "64px resnet-1111 (baseline)": AttrNetConfig(input_size=64, depths=(1, 1, 1, 1)),
    "80px resnet-1221 (fast)": AttrNetConfig(input_size=80, depths=(1, 2, 2, 1)),
    "96px resnet-1221": AttrNetConfig(input_size=96, depths=(1, 2, 2, 1)),
    "96px inception-6e": AttrNetConfig(input_size=96, backbone="inception"),
    "128px inception-6e": AttrNetConfig(input_size=128, backbone="inception"),
}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def train_images_per_s(config: AttrNetConfig, batch: int = 128) -> float:
    model = AttrNet(config).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pixels = torch.randint(0, 256, (batch, 3, config.input_size, config.input_size), dtype=torch.uint8)
    labels = (torch.randint(0, 2, (batch,)), torch.randint(0, 5, (batch,)), torch.randint(1, 90, (batch,)))
    weights = torch.ones(5)
    generator = torch.Generator().manual_seed(0)

    def step():
        x = augment(pixels, generator).contiguous(memory_format=torch.channels_last)
        loss = multitask_loss(model(x), *labels, weights, model.age_values)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return batch / timed(step, 4)


def infer_images_per_s(model, batch: int = 256) -> float:
    size = model.config.input_size
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode():
        return batch / timed(lambda: model.infer(pixels), 4)


def onnx_images_per_s(model_source, size: int, threads: int, batch: int = 256) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from faceattr_batch.models.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(model_source, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        pixels = np.random.default_rng(0).integers(0, 256, (batch, 3, size, size), dtype=np.uint8)
        return batch / timed(lambda: session.run(None, {"pixels": pixels}), 4)


def decode_images_per_s(files: list[str], size: int, workers: int) -> float:
    start = time.perf_counter()
    n = sum(len(b.ok) for b in iter_batches(files, functools.partial(load_chip, size=size), 256, workers))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=Path(__file__).parents[1] / ".." / "shared/data/utkface")
    parser.add_argument("--n", type=int, default=2000, help="images for the decode-only figure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="what predict --model takes (default: the shipped default)")
    parser.add_argument("--candidates", action="store_true", help="also time the candidate architectures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores")

    source = resolve_attr_source(args.model)
    model, _ = load_attr_model(source)
    networks = list(getattr(model, "members", [model]))  # an ensemble's members, or the one network
    size = model.config.input_size
    described = ", ".join(f"{n.config.backbone} {n.config.input_size}px mirror={n.config.tta_flip}" for n in networks)
    print(f"model: {source} ({described})")
    infer = infer_images_per_s(model)
    print(f"inference torch, batch 256:          {infer:8.0f} images/s")
    ort_speed = onnx_images_per_s(source, size, args.threads)
    if ort_speed:
        print(f"inference onnxruntime, batch 256:    {ort_speed:8.0f} images/s")
    for net in networks:
        speed = train_images_per_s(net.config)
        print(f"training step (augment + fwd + bwd): {speed:8.0f} images/s (batch 128, {net.config.input_size}px)")

    if args.images.is_dir():
        files = sorted(str(p) for p in args.images.iterdir())[: args.n]
        decode = decode_images_per_s(files, size, args.threads)
        print(f"decode only ({args.threads} workers, {size} px):   {decode:8.0f} images/s over {len(files)} files")
        best = max(infer, ort_speed or 0)
        print(
            f"ratio model / decode: {best / decode:.2f}; ideal predict 1/(1/decode+1/model) = "
            f"{1 / (1 / decode + 1 / best):.0f} images/s"
        )
    else:
        print(f"decode-only skipped: {args.images} not found")

    if args.candidates:
        for name, config in CANDIDATES.items():
            net = AttrNet(config).eval()
            params = sum(p.numel() for p in net.parameters()) / 1e6
            print(
                f"{name:28s} {params:5.2f} M params  train {train_images_per_s(config):6.0f} img/s  "
                f"infer {infer_images_per_s(net):6.0f} img/s"
            )


if __name__ == "__main__":
    main()
