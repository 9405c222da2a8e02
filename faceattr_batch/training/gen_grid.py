"""train-gen's sample grid: every gender x race (rows) by a few ages (columns), one fixed noise vector per column,
written as ``grid_<iteration>.png`` and ``grid_latest.png`` as a run goes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from faceattr_batch.data.labels import GENDERS, RACES
from faceattr_batch.io.atomic import replacing

GRID_AGES = (3, 10, 20, 30, 45, 60, 75, 90)  # columns of the sample grid


def grid_conditions(n_cols: int = len(GRID_AGES)):
    """Rows: every gender x race; columns: ages (each column one fixed noise vector)."""
    import torch  # heavy: loaded when a training starts, not when the CLI does

    rows = [(g, r) for r in range(len(RACES)) for g in range(len(GENDERS))]
    gender = torch.tensor([g for g, _ in rows for _ in range(n_cols)])
    race = torch.tensor([r for _, r in rows for _ in range(n_cols)])
    age = torch.tensor(list(GRID_AGES[:n_cols]) * len(rows))
    return gender, race, age, len(rows)


def save_grid(images, n_rows: int, path: Path) -> None:
    """N x 3 x R x R in [-1, 1] -> one PNG, row-major, 2-pixel gaps."""
    from PIL import Image

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    n, size = pixels.shape[0], pixels.shape[1]
    n_cols = n // n_rows
    canvas = np.full((n_rows * (size + 2), n_cols * (size + 2), 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, n_cols)
        canvas[r * (size + 2) : r * (size + 2) + size, c * (size + 2) : c * (size + 2) + size] = pixels[i]
    with replacing(path) as tmp:
        Image.fromarray(canvas).save(tmp)


def grid_drawer(z_dim: int, device, out: Path):
    """A function (generator, iteration) that writes ``grid_<iteration>.png`` and ``grid_latest.png``: every
    gender x race by the grid's ages, one fixed noise vector per column."""
    import torch

    gender, race, age, n_rows = grid_conditions()
    z = torch.randn(len(GRID_AGES), z_dim, generator=torch.Generator().manual_seed(12345)).repeat(n_rows, 1)
    conditions = [t.to(device) for t in (z, gender, race, age)]

    def draw(generator, iteration: int) -> None:
        with torch.no_grad():
            images = generator(*conditions)
        path = out / f"grid_{iteration:06d}.png"
        save_grid(images.cpu(), n_rows, path)
        with replacing(out / "grid_latest.png") as latest:  # a viewer polling it never reads half a PNG
            shutil.copyfile(path, latest)

    return draw
