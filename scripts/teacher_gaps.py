"""Where a generator's faces sit from the real training faces in a teacher's features, per condition (issue 21; what
``train-gen --teacher-moments`` matches), and how hard matching them pushes on the images.

    python scripts/teacher_gaps.py --source TRAIN.parquet --root DIR [--model GEN] [--teacher fast] \
        [--batches 40] [--truncation 1.2] [--seed 1] [--pixels-cache FILE.npy] [-o gaps.csv]

1. Gaps: ``--batches`` batches of 64 conditions drawn as train-gen draws its fake ones (``--balance``, default 0.5),
   one sample each. Per gender x race x age band cell (the report's bands): the squared difference between the mean
   of the teacher's pooled features of the samples and of the real faces (``FeatureMoments.of_real``, the training
   loss's own), in units of each feature's spread over all real faces, averaged over the features. With n samples
   in a cell about 1/n of it is sampling alone: cells with ``--min-cell`` (15) samples and real faces are summarised.
2. Gradients: on the first four batches, the norm of the gradient on the images of the moments loss at weight 1
   (running means set to the samples' cell means, as in a settled run) and of the teacher's age loss at
   ``--teacher-weight`` (gen16's 0.03): their ratio sets a moments weight that pushes as hard as that teacher did.

Prints the widest cells, each band's mean gap and the two gradient norms; writes every cell to ``-o`` (CSV).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
import torch

from faceattr_batch.data.labels import AGE_BANDS, GENDERS, RACES
from faceattr_batch.models.registry import load_attr_model, load_generator
from faceattr_batch.pipelines.train_gen import GEN_MAX_AGE, condition_weights, draw_rows
from faceattr_batch.training.data import decode_cache, label_tensors, load_labelled
from faceattr_batch.training.feature_moments import N_CELLS, FeatureMoments, cell_feature_sums, condition_cells
from faceattr_batch.training.losses import generated_faces_loss

BATCH = 64


def draw_batches(generator, labels: list, weights, *, batches: int, truncation: float, seed: int):
    """``batches`` tuples (images, gender, race, age): conditions drawn by ``weights``, seeded noise."""
    rng = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        rows = draw_rows(len(labels[0]), BATCH, weights, rng)
        conditions = [t[rows] for t in labels]
        noise = torch.randn(len(rows), generator.config.z_dim, generator=rng) * truncation
        with torch.no_grad():
            yield generator(noise, *conditions), *conditions


def cell_means(teacher, drawn: list) -> tuple:
    """The teacher's mean pooled features of the drawn images per cell (N_CELLS x D) and each cell's count."""
    sums, _, counts = cell_feature_sums(teacher, ((images, condition_cells(*labels)) for images, *labels in drawn))
    return (sums / counts.clamp(min=1).unsqueeze(1)).float(), counts


def gap_table(real: FeatureMoments, fake_mean, n_samples, n_real) -> pl.DataFrame:
    """One row per cell: gender, race, band, n_real, n_samples, gap (null where the cell was not drawn)."""
    gap = (((fake_mean - real.real_mean) / real.scale) ** 2).mean(dim=1)
    cells = [(g, r, b) for g in GENDERS for r in RACES for b, _, _ in AGE_BANDS]
    return pl.DataFrame(
        {
            "gender": [g for g, _, _ in cells],
            "race": [r for _, r, _ in cells],
            "band": [b for _, _, b in cells],
            "n_real": n_real.int().tolist(),
            "n_samples": n_samples.int().tolist(),
            "gap": [float(v) if n > 0 else None for v, n in zip(gap.tolist(), n_samples.tolist(), strict=True)],
        }
    )


def gradient_norms(teacher, real: FeatureMoments, fake_mean, drawn: list, teacher_weight: float) -> tuple:
    """Mean over ``drawn`` of the image-gradient norms: (teacher's age loss x ``teacher_weight``, moments loss)."""
    norms = []
    for images, gender, race, age in drawn:
        settled = FeatureMoments(real.real_mean, real.scale, fake_mean.clone(), torch.ones(N_CELLS, dtype=torch.bool))
        x = images.clone().requires_grad_(True)
        age_loss = teacher_weight * generated_faces_loss(teacher, x, gender, race, age, age_only=True)
        (age_grad,) = torch.autograd.grad(age_loss, x)
        (moments_grad,) = torch.autograd.grad(settled.loss(teacher, x, gender, race, age), x)
        norms.append((age_grad.norm().item(), moments_grad.norm().item()))
    return tuple(np.mean(norms, axis=0).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="the generator's training index (Parquet)")
    parser.add_argument("--root", type=Path, help="folder the source's paths are relative to")
    parser.add_argument("--model", help="generator file or train-gen RUN_DIR (default: the shipped one)")
    parser.add_argument("--teacher", default="fast", help="attribute model whose features are compared")
    parser.add_argument("--balance", type=float, default=0.5)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--truncation", type=float, default=1.2)
    parser.add_argument("--teacher-weight", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-cell", type=int, default=15, help="samples and real faces a summarised cell needs")
    parser.add_argument("--pixels-cache", type=Path, help="a train-gen RUN_DIR's pixels_64.npy (decoded once)")
    parser.add_argument("-o", "--out", type=Path, default=Path("teacher_gaps.csv"))
    args = parser.parse_args()

    table = load_labelled(args.source, args.root, 1)
    labels = list(label_tensors(table, GEN_MAX_AGE).values())
    generator, _ = load_generator(args.model)
    pixels = decode_cache(table, generator.config.resolution, args.pixels_cache, 1, progress=True)
    teacher, _ = load_attr_model(args.teacher)
    teacher = teacher.eval().requires_grad_(False)
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    real = FeatureMoments.of_real(teacher, pixels, labels, "cpu", progress=True)
    weights = condition_weights(labels, args.balance)
    draws = {"batches": args.batches, "truncation": args.truncation, "seed": args.seed}
    drawn = list(draw_batches(generator, labels, weights, **draws))
    fake_mean, n_samples = cell_means(teacher, drawn)
    table = gap_table(real, fake_mean, n_samples, torch.bincount(condition_cells(*labels), minlength=N_CELLS))
    table.write_csv(args.out)
    kept = table.filter((pl.col("n_samples") >= args.min_cell) & (pl.col("n_real") >= args.min_cell))
    if kept.is_empty():
        raise SystemExit(f"no cell has {args.min_cell} samples and real faces: raise --batches or lower --min-cell")
    with pl.Config(tbl_rows=20):
        print(f"mean gap over {kept.height} cells with >= {args.min_cell} samples and real faces: ", end="")
        print(f"{kept['gap'].mean():.3f}")
        print(kept.sort("gap", descending=True).head(12))
        print(kept.group_by("band", maintain_order=True).agg(cells=pl.len(), mean_gap=pl.col("gap").mean()))
    age_norm, moments_norm = gradient_norms(teacher, real, fake_mean, drawn[:4], args.teacher_weight)
    print(f"image-gradient norms: teacher age loss x {args.teacher_weight}: {age_norm:.4f}; moments loss x 1: "
          f"{moments_norm:.4f}; equal at moments weight {age_norm / moments_norm:.3f}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
