"""Writing a generator's samples as UTKFace-named JPEGs: shared by ``synth`` and ``train-gen``'s evaluation.

Image i's noise depends only on (seed, i), so batch size and n never change which face an image is (its last float
digits, and so a pixel level here and there, may differ with the batch's size).
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from PIL import Image

from faceattr_batch.data.labels import format_name
from faceattr_batch.progress import progress_bar

if TYPE_CHECKING:
    import torch

STAMP_BASE = dt.datetime(2000, 1, 1)  # synthetic "capture" times: base + seed days + index milliseconds
MAX_SEED = 2**32 - 1  # numpy's range; seed * 1_000_003 + i then fits torch's 64-bit seeds


def sample_noise(z_dim: int, seed: int, start: int, stop: int) -> torch.Tensor:
    """The noise of images start..stop-1: image i's from (seed, i) alone."""
    import torch  # lazy: importing the synth pipeline (and the CLI) stays fast

    return torch.stack(
        [torch.randn(z_dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + i)) for i in range(start, stop)]
    )


def sample_names(wanted: pl.DataFrame, seed: int) -> list[str]:
    """UTKFace names for the rows of ``wanted`` (gender, race, age), unique per (seed, row)."""
    labels = wanted.to_dict(as_series=False)
    return [
        format_name(
            labels["age"][i],
            labels["gender"][i],
            labels["race"][i],
            STAMP_BASE + dt.timedelta(days=seed % 3650, milliseconds=i),
        )
        for i in range(wanted.height)
    ]


def write_samples(
    generator,
    wanted: pl.DataFrame,
    out_dir: Path,
    seed: int,
    size: int | None = None,
    truncation: float = 1.0,
    batch_size: int = 256,
    quality: int = 95,
    progress: bool = True,
    names: list[str] | None = None,
) -> pl.DataFrame:
    """Generate one image per row of ``wanted`` (gender, race, age) into ``out_dir``; returns the manifest rows.

    ``size`` resizes the written images (None = the generator's resolution); ``names``: the files'
    names (None = ``sample_names``). The rows come back with ``file`` (the written name) and ``index`` (the row
    number, which seeds the image's noise).
    """
    import torch  # lazy, as above

    out_dir.mkdir(parents=True, exist_ok=True)
    z_dim = generator.config.z_dim
    names = sample_names(wanted, seed) if names is None else names
    labels = wanted.to_dict(as_series=False)

    def save(pixels: np.ndarray, name: str) -> None:
        image = Image.fromarray(pixels)
        if size and size != pixels.shape[0]:
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        image.save(out_dir / name, quality=quality)

    bar = progress_bar(total=wanted.height, desc="synth", unit="img", enabled=progress)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, torch.inference_mode():
        for start in range(0, wanted.height, batch_size):
            stop = min(start + batch_size, wanted.height)
            cond = [torch.tensor(labels[k][start:stop]) for k in ("gender", "race", "age")]
            images = generator(sample_noise(z_dim, seed, start, stop) * truncation, *cond)
            pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            list(pool.map(save, pixels, names[start:stop]))
            bar.update(stop - start)
    bar.close()
    return wanted.with_columns(pl.Series("file", names), pl.Series("index", range(wanted.height)))
