"""Training data: the labelled rows of an index, the split by duplicate group, the decoded chips, augmentation.

Shared by `train`, `train-gen` and `ensemble` (the ensemble re-creates its members' validation split).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.decode import load_chip
from faceattr_batch.data.labels import STATUS_REJECTED
from faceattr_batch.errors import FaceattrError
from faceattr_batch.index.build import IndexOptions, build_index, read_index_metadata
from faceattr_batch.io.atomic import replacing
from faceattr_batch.models.registry import resolve_attr_source, seen_images_path
from faceattr_batch.models.seen_images import SeenImages
from faceattr_batch.progress import progress_bar

log = logging.getLogger(__name__)

LABELLED_COLUMNS = ("path", "age", "gender", "race", "status", "dup_group")


def load_labelled(source: Path, root: Path | None, workers: int, limit: int | None = None) -> pl.DataFrame:
    """Rows with all three labels: absolute ``file``, age, gender, race, dup_group (from ``index --hash``);
    the first ``limit`` of them by path when given."""
    source = Path(source)
    if source.is_dir():
        table = build_index(IndexOptions(root=source, hash=True, workers=workers)).table
        root = source
    elif source.is_file():
        try:
            table = pl.read_parquet(source)
        except Exception as err:
            raise FaceattrError(f"{source}: not a readable index Parquet ({err})") from None
        root = root or Path(read_index_metadata(source).get("faceattr_batch.root", source.parent))
    else:
        raise FaceattrError(f"{source}: no such index file or folder")
    missing = set(LABELLED_COLUMNS) - set(table.columns)
    if missing:
        hint = " (make it with `faceattr-batch index DIR --hash`)" if "dup_group" in missing else ""
        raise FaceattrError(f"{source}: index lacks columns {sorted(missing)}{hint}")
    table = table.filter(
        (pl.col("status") != STATUS_REJECTED)
        & pl.col("age").is_not_null()
        & pl.col("gender").is_not_null()
        & pl.col("race").is_not_null()
    )
    if table.height < 2:
        raise FaceattrError(f"{source}: fewer than 2 labelled images to train on")
    table = table.select(
        pl.col("path"),
        (pl.lit(str(Path(root).resolve()) + os.sep) + pl.col("path")).alias("file"),
        "age",
        "gender",
        "race",
        "dup_group",
        *(["sha256"] if "sha256" in table.columns else []),  # --extra's copies of validation faces are found by it
    ).sort("path")
    return table.head(limit) if limit else table


def split_by_group(table: pl.DataFrame, val_fraction: float, seed: int) -> pl.DataFrame:
    """Add ``split`` (train/val): whole duplicate groups go to one side, chosen by a seeded shuffle."""
    groups = table.get_column("dup_group").unique().sort()
    order = np.random.default_rng(seed).permutation(groups.len())
    n_val_groups = max(1, round(groups.len() * val_fraction))
    val_groups = groups.gather(order[:n_val_groups])
    return table.with_columns(
        pl.when(pl.col("dup_group").is_in(val_groups.implode()))
        .then(pl.lit("val"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )


def with_training_only_rows(table: pl.DataFrame, sources: tuple[Path, ...], workers: int) -> pl.DataFrame:
    """``table`` (split) and after it the labelled rows of each source (an index Parquet or a folder, such as
    synth's output) on the train side: learned from, never validated on, and the split of ``table`` unchanged.
    With sources, a column ``extra`` tells their rows (True) from ``table``'s.
    A file that is also one of ``table``'s is refused (it could be a validation face), and so is a byte-identical
    copy of a validation face (by ``sha256``, where both indexes have it); near-duplicates are not looked for."""
    extra = []
    validation = table.filter(pl.col("split") == "val")
    for source in sources:
        rows = load_labelled(source, None, workers)
        shared = rows.join(table, on="file", how="semi")
        if shared.height:
            first = shared["file"][0]
            raise FaceattrError(f"--extra {source}: {shared.height} of its files are the source's own ({first})")
        if "sha256" in rows.columns and "sha256" in validation.columns:
            copies = rows.join(validation, on="sha256", how="semi")
            if copies.height:
                raise FaceattrError(
                    f"--extra {source}: {copies.height} of its files are copies of validation faces "
                    f"({copies['file'][0]}); remove them, or the validation figures count faces trained on"
                )
        extra.append(rows.with_columns(split=pl.lit("train"), extra=True))
    return pl.concat([table.with_columns(extra=False), *extra], how="vertical_relaxed") if extra else table


def refuse_trained_on(table: pl.DataFrame, models: dict) -> None:
    """Fail when a model of ``models`` (its option, e.g. ``--teacher`` -> a model source or None) was trained on
    faces of ``table``'s validation side: learned from it (distilled or started from), the run would be validated on
    faces it had seen. Known from its RUN_DIR's ``split.parquet`` (by path), or from its seen-images file (by
    SHA-256, where ``table`` has it: the shipped models); a model file on its own is not checked."""
    validation = table.filter(pl.col("split") == "val")
    for option, source in models.items():
        if source is None:
            continue
        model = resolve_attr_source(source)
        if (model.parent / "split.parquet").is_file():
            trained = pl.read_parquet(model.parent / "split.parquet").filter(pl.col("split") == "train")
            seen = validation.join(trained, on="path", how="semi").height
        elif (seen_file := seen_images_path(model)) is not None and "sha256" in validation.columns:
            roles = SeenImages.load(seen_file).marks(validation["sha256"].to_list())["training_role"]
            seen = roles.count("train")
        else:
            log.warning(
                "%s %s: a model without its RUN_DIR's split.parquet or a seen-images file: whether it trained on "
                "this run's validation faces is not checked (if it did, the validation figures flatter it)",
                option,
                source,
            )
            continue
        if seen:
            raise FaceattrError(
                f"{option} {source}: trained on {seen} of this run's {validation.height} validation faces; give the "
                "--seed and --val-fraction its run had (the shipped models': 0 and 0.1), or another model"
            )


def split_by_fold(table: pl.DataFrame, folds: int, fold: int, seed: int) -> pl.DataFrame:
    """Add ``split``: ``val`` for fold ``fold`` of ``folds``, ``train`` for the others. Whole duplicate groups are
    dealt round-robin to the folds in a seeded shuffle, so every image is in exactly one fold and no face in two."""
    if not 0 <= fold < folds:
        raise FaceattrError(f"fold {fold} is not one of the {folds} folds")
    groups = table.get_column("dup_group").unique().sort()
    if groups.len() < folds:
        raise FaceattrError(f"{groups.len()} duplicate groups cannot fill {folds} folds")
    order = np.random.default_rng(seed).permutation(groups.len())
    held_out = groups.gather(order[fold::folds])
    return table.with_columns(
        pl.when(pl.col("dup_group").is_in(held_out.implode()))
        .then(pl.lit("val"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )


def pixel_cache(options) -> Path:
    """The file holding a training run's chips decoded at its input size (``decode_cache``): in its RUN_DIR, or
    for a fold of a cross-fitting run (``options.fold`` set) in the cross-fit's folder, which all folds read."""
    run_dir = Path(options.out_dir)
    return (run_dir if options.fold is None else run_dir.parent) / f"pixels_{options.input_size}.npy"


def cache_key(files: list[str], *parts: str) -> str:
    """What a cache in RUN_DIR was computed from (its files in order, and ``parts`` such as a teacher's path): a
    cache with another key is another run's (one killed before its first checkpoint, in the same ``-o``) and is
    computed again rather than trained on."""
    return hashlib.sha256("\n".join([*files, "", *parts]).encode("utf-8", "surrogateescape")).hexdigest()


def decode_cache(table: pl.DataFrame, size: int, cache: Path | None, workers: int, progress: bool) -> np.ndarray:
    """N x S x S x 3 uint8 for the table's files, decoded once and kept in ``cache`` in RUN_DIR (reused on resume,
    when its key file says it holds these files); only in memory when ``cache`` is None."""
    files = table.get_column("file").to_list()
    key, key_file = cache_key(files, str(size)), None if cache is None else cache.with_name(cache.name + ".key")
    if cache is not None and cache.is_file() and key_file.is_file() and key_file.read_text() == key:
        try:
            pixels = np.load(cache)
        except (OSError, ValueError, EOFError):  # a damaged cache is decoded again, as a missing one is
            pixels = None
        if pixels is not None and pixels.shape == (table.height, size, size, 3):
            return pixels
    pixels = np.zeros((len(files), size, size, 3), dtype=np.uint8)
    failed = []
    bar = progress_bar(total=len(files), desc="decode", unit="img", enabled=progress)
    for batch in iter_batches(files, partial(load_chip, size=size), 256, workers):
        for slot, pos in enumerate(batch.ok):
            pixels[batch.start + pos] = batch.items[slot]
        failed += [(batch.paths[pos], reason) for pos, reason in batch.errors.items()]
        bar.update(len(batch.paths))
    bar.close()
    if failed:
        raise FaceattrError(f"{len(failed)} training images could not be decoded, e.g. {failed[0][0]}: {failed[0][1]}")
    if cache is not None:
        with replacing(cache) as tmp:
            np.save(tmp, pixels)
        with replacing(key_file) as tmp:
            tmp.write_text(key)
    return pixels


def label_tensors(rows: pl.DataFrame, max_age: int) -> dict:
    """``gender``, ``race`` and ``age`` (clamped to 0..max_age) of ``rows`` as int64 tensors."""
    import torch  # heavy: loaded when a training starts, not when the CLI does

    labels = {k: torch.from_numpy(rows.get_column(k).to_numpy().astype(np.int64)) for k in ("gender", "race", "age")}
    labels["age"] = labels["age"].clamp(0, max_age)
    return labels


def augment(pixels, generator):
    """Random mirror, rotation (±10°), scale (±10%), shift (±6%) and colour jitter, on a float batch."""
    import torch
    from torch.nn import functional as F

    n = pixels.shape[0]

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, generator=generator)

    x = pixels.float()
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    angle = uniform(-10, 10) * math.pi / 180
    scale = uniform(0.9, 1.1)
    shift = torch.stack([uniform(-0.06, 0.06), uniform(-0.06, 0.06)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)],
        1,
    )
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = uniform(0.75, 1.25).view(n, 1, 1, 1).to(x.device)
    contrast = uniform(0.75, 1.25).view(n, 1, 1, 1).to(x.device)
    saturation = torch.where(torch.rand(n, generator=generator) < 0.05, 0.0, uniform(0.7, 1.3)).view(n, 1, 1, 1)
    gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = gray + (x - gray) * saturation.to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    return (x * brightness).clamp(0, 255)
