"""`faceattr-batch train`: fit the attribute network on a UTKFace-style index, resumably.

Spine: labelled index -> split by duplicate group (no face on both sides) -> decode every chip once into a
uint8 cache -> epochs of batch augmentation + multi-task loss -> per-epoch validation, metrics table and
checkpoints -> best checkpoint -> temperature scaling on validation -> ``model.pt`` + ``report.json``.

Deterministic given the seed: each epoch's shuffle, augmentation and dropout draw from generators seeded by
(seed, epoch), so a run resumed from its last checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.labels import MAX_AGE, RACES, STATUS_REJECTED
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import replacing, write_json
from faceattr_batch.io.rundir import append_metrics, start_run
from faceattr_batch.models.device import resolve_device
from faceattr_batch.progress import progress_bar

log = logging.getLogger(__name__)

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"
MODEL_FILE = "model.pt"
TEACHER_TARGETS = "teacher_targets.npz"  # --teacher: its probabilities on the training faces, computed once
# A pretrained trunk learns at this fraction of --lr (the new head at the full rate): fine-tuning, not relearning.
PRETRAINED_LR_SCALE = 0.25
MIN_INCEPTION_INPUT = 64


@dataclass(frozen=True)
class TrainOptions:
    source: Path  # an index Parquet from `index`, or a folder (indexed with --hash first)
    out_dir: Path
    root: Path | None = None  # image folder for an index Parquet; default: the root recorded in it
    input_size: int = 80
    backbone: str = "resnet"  # "resnet" (from scratch) or "inception" (ImageNet-initialised, models/attr_net.py)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    dropout: float = 0.1
    # Start from this attribute model (a shipped name, a model file or a RUN_DIR): its architecture, any input size
    init_from: str | None = None
    # Also learn the calibrated predictions of this model (any attribute model, an ensemble too) on the training
    # faces (knowledge distillation); the loss is (1 - distill_weight) x labels + distill_weight x the teacher's
    teacher: str | None = None
    distill_weight: float = 0.5
    epochs: int = 60
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    val_fraction: float = 0.1
    patience: int = 12  # epochs without a better validation score before stopping early
    seed: int = 0
    workers: int = 2
    threads: int | None = None  # torch threads on the CPU; None = all cores (1 is steadier on a shared machine)
    device: str = "auto"
    limit: int | None = None  # only the first N labelled images (smoke tests)
    steps_per_epoch: int | None = None  # cap steps per epoch (smoke tests)
    progress: bool = True


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    report: dict = field(default_factory=dict)


# --- data -----------------------------------------------------------------------------------------------------


def load_labelled(source: Path, root: Path | None, workers: int, limit: int | None = None) -> pl.DataFrame:
    """Rows with all three labels: absolute ``file``, age, gender, race, dup_group (from ``index --hash``);
    the first ``limit`` of them by path when given."""
    from faceattr_batch.pipelines.index import IndexOptions, build_index, read_index_metadata

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
    missing = {"path", "age", "gender", "race", "status", "dup_group"} - set(table.columns)
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


def decode_cache(table: pl.DataFrame, size: int, cache: Path | None, workers: int, progress: bool) -> np.ndarray:
    """N x S x S x 3 uint8 for the table's files, decoded once and kept in ``cache`` in RUN_DIR (reused on resume);
    only in memory when ``cache`` is None."""

    from faceattr_batch.data.batches import iter_batches
    from faceattr_batch.data.decode import load_chip

    if cache is not None and cache.is_file():
        pixels = np.load(cache)
        if pixels.shape == (table.height, size, size, 3):
            return pixels
    files = table.get_column("file").to_list()
    pixels = np.zeros((len(files), size, size, 3), dtype=np.uint8)
    failed = []
    bar = progress_bar(total=len(files), desc="decode", unit="img", enabled=progress)
    for batch in iter_batches(files, partial(load_chip, size=size), 256, workers):
        for slot, pos in enumerate(batch.ok):
            pixels[batch.start + pos] = batch.pixels[slot]
        failed += [(batch.paths[pos], reason) for pos, reason in batch.errors.items()]
        bar.update(len(batch.paths))
    bar.close()
    if failed:
        raise FaceattrError(f"{len(failed)} training images could not be decoded, e.g. {failed[0][0]}: {failed[0][1]}")
    if cache is not None:
        with replacing(cache) as tmp:
            np.save(tmp, pixels)
    return pixels


# --- the training step ----------------------------------------------------------------------------------------


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


def soft_age_targets(age, bins: int):
    """Label distribution for ages: a Gaussian whose width grows with age, as the labels' noise does."""
    import torch

    values = torch.arange(bins, dtype=torch.float32, device=age.device)
    sigma = 1.5 + 0.05 * age.float()
    weights = torch.exp(-0.5 * ((values[None, :] - age[:, None].float()) / sigma[:, None]) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def multitask_loss(logits, gender, race, age, race_weights, age_values):
    import torch
    from torch.nn import functional as F

    gender_loss = F.binary_cross_entropy_with_logits(logits.gender.float(), gender.float())
    race_loss = F.cross_entropy(logits.race.float(), race, weight=race_weights, label_smoothing=0.05)
    log_probs = torch.log_softmax(logits.age.float(), dim=1)
    age_loss = -(soft_age_targets(age, log_probs.shape[1]) * log_probs).sum(dim=1).mean()
    expected = (log_probs.exp() * age_values).sum(dim=1)
    age_l1 = (expected - age.float()).abs().mean()
    return gender_loss + race_loss + age_loss + 0.1 * age_l1


def distillation_loss(logits, soft: dict, race_bias):
    """Cross-entropy to the teacher's calibrated probabilities (P(female), race, age distribution). The teacher's
    race probabilities follow the real class frequencies, so they are compared with the student's logits after
    the logit adjustment ``finalize`` will give it (``race_bias`` = -log of the loss weights)."""
    import torch
    from torch.nn import functional as F

    gender_loss = F.binary_cross_entropy_with_logits(logits.gender.float(), soft["p_female"])
    race_loss = -(soft["race"] * torch.log_softmax(logits.race.float() + race_bias, dim=1)).sum(dim=1).mean()
    age_loss = -(soft["age"] * torch.log_softmax(logits.age.float(), dim=1)).sum(dim=1).mean()
    return gender_loss + race_loss + age_loss


def teacher_targets(source: str, rows: pl.DataFrame, cache: Path, workers: int, progress: bool, device) -> dict:
    """The teacher's calibrated probabilities on ``rows`` (float32 numpy arrays), computed once and kept in
    ``cache`` (reused on resume). The chips are decoded at the teacher's own input size."""
    import torch

    from faceattr_batch.models.registry import load_attr_model

    if cache.is_file():
        with np.load(cache) as stored:
            if len(stored["p_female"]) == rows.height:
                return {key: stored[key] for key in stored.files}
    teacher, _ = load_attr_model(source)
    if not hasattr(teacher, "logits"):
        raise FaceattrError(f"--teacher {source}: an ONNX file can't teach; give its .pt model")
    teacher = teacher.to(device).eval()
    pixels = decode_cache(rows, teacher.config.input_size, None, workers, progress)
    gender, race, age = collect_logits(teacher, pixels, device, 128, "teacher" if progress else None)
    t_gender, t_race, t_age = teacher.temperatures.cpu().tolist()
    targets = {
        "p_female": torch.sigmoid(gender / t_gender).numpy(),
        "race": torch.softmax(race / t_race, dim=1).numpy(),
        "age": torch.softmax(age / t_age, dim=1).numpy(),
    }
    with replacing(cache) as tmp:
        np.savez(tmp, **targets)
    return targets


# --- evaluation -----------------------------------------------------------------------------------------------


def collect_logits(model, pixels: np.ndarray, device, batch_size: int = 512, desc: str | None = None):
    """Logits for all cached pixels (with the model's test-time mirror when configured), on the CPU; a progress
    bar named ``desc`` when given."""
    import torch

    parts = []
    starts = range(0, len(pixels), batch_size)
    with torch.inference_mode():
        for start in progress_bar(starts, desc=desc, unit="batch", enabled=desc is not None):
            chunk = torch.from_numpy(pixels[start : start + batch_size]).permute(0, 3, 1, 2).to(device)
            parts.append([t.float().cpu() for t in model.logits(chunk.contiguous(memory_format=torch.channels_last))])
    return [torch.cat(column) for column in zip(*parts, strict=True)]


def predictions_frame(logits, temperatures, labels: pl.DataFrame) -> pl.DataFrame:
    import torch

    t_gender, t_race, t_age = temperatures
    gender, race, age = logits
    age_probs = torch.softmax(age / t_age, dim=1)
    expected = (age_probs * torch.arange(age.shape[1])).sum(dim=1)
    return labels.select(
        pl.col("path"),
        pl.col("gender").alias("true_gender"),
        pl.col("race").alias("true_race"),
        pl.col("age").alias("true_age"),
    ).with_columns(
        pl.Series("p_female", torch.sigmoid(gender / t_gender).numpy()),
        pl.Series("pred_gender", (gender > 0).long().numpy()),
        pl.Series("pred_race", race.argmax(dim=1).numpy()),
        pl.Series("race_confidence", torch.softmax(race / t_race, dim=1).max(dim=1).values.numpy()),
        pl.Series("pred_age", expected.numpy()),
    )


def validation_score(metrics: dict) -> float:
    """One number for early stopping: accuracies in %, MAE in years (1 year of MAE ~ 2.5 points)."""
    return 100 * metrics["gender_accuracy"] + 100 * metrics["race_accuracy"] - 2.5 * metrics["age_mae"]


def fit_temperatures(logits, labels: pl.DataFrame) -> tuple[list[float], dict]:
    """Temperature per head minimising validation NLL (grid search in log space: robust, 1-D each)."""
    import torch
    from torch.nn import functional as F

    gender, race, age = logits
    g_true = torch.tensor(labels.get_column("gender").to_numpy()).float()
    r_true = torch.tensor(labels.get_column("race").to_numpy()).long()
    a_true = torch.tensor(labels.get_column("age").to_numpy()).long().clamp(0, age.shape[1] - 1)
    nll = {
        "gender": lambda t: F.binary_cross_entropy_with_logits(gender / t, g_true).item(),
        "race": lambda t: F.cross_entropy(race / t, r_true).item(),
        # age bins are one year wide and the labels noisy: score the probability within ±2 years
        "age": lambda t: (
            -torch.log(
                (torch.softmax(age / t, 1) * (torch.arange(age.shape[1])[None] - a_true[:, None]).abs().le(2)).sum(1)
                + 1e-8
            )
            .mean()
            .item()
        ),
    }
    grid = torch.exp(torch.linspace(math.log(0.25), math.log(4.0), 121)).tolist()
    temps = [min(grid, key=nll[head]) for head in ("gender", "race", "age")]
    calibration = {
        "temperatures": dict(zip(("gender", "race", "age"), temps, strict=True)),
        "gender_ece_before": expected_calibration_error(torch.sigmoid(gender), g_true),
        "gender_ece_after": expected_calibration_error(torch.sigmoid(gender / temps[0]), g_true),
        "race_ece_before": expected_calibration_error(torch.softmax(race, 1), r_true),
        "race_ece_after": expected_calibration_error(torch.softmax(race / temps[1], 1), r_true),
    }
    return temps, calibration


def expected_calibration_error(probs, truth, bins: int = 15) -> float:
    """ECE over 15 equal-width confidence bins; binary probs are read as P(class 1)."""
    import torch

    if probs.dim() == 1:
        confidence = torch.maximum(probs, 1 - probs)
        correct = ((probs >= 0.5).long() == truth.long()).float()
    else:
        confidence, predicted = probs.max(dim=1)
        correct = (predicted == truth).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.float().mean().item() * abs(confidence[inside].mean().item() - correct[inside].mean().item())
    return ece


# --- the run --------------------------------------------------------------------------------------------------


def run(options: TrainOptions, resume: bool = False) -> TrainResult:
    import torch

    from faceattr_batch.models.attr_net import BACKBONES, AttrNet, AttrNetConfig
    from faceattr_batch.models.registry import (
        TRAIN_FORMAT,
        load_attr_model,
        read_checkpoint,
        save_atomically,
        save_attr_model,
        storage_state,
    )

    out = Path(options.out_dir)
    last_path = out / CHECKPOINT_LAST
    init_model = None
    if options.init_from and not resume:
        init_model = load_attr_model(options.init_from)[0]
        if not isinstance(init_model, AttrNet):
            raise FaceattrError(
                f"--init-from {options.init_from}: an ensemble or ONNX file; start from one network (a member's file)"
            )
        arch = init_model.config  # recorded in options.json, so the run says what it trained
        options = replace(options, backbone=arch.backbone, widths=arch.widths, depths=arch.depths)
    if options.backbone not in BACKBONES:
        raise FaceattrError(f"--backbone {options.backbone}: not one of {', '.join(BACKBONES)}")
    if options.backbone == "inception" and options.input_size < MIN_INCEPTION_INPUT:
        raise FaceattrError(f"the inception backbone needs --input-size {MIN_INCEPTION_INPUT} or more")
    options = start_run(options, CHECKPOINT_LAST, "training", resume)

    torch.set_num_threads(options.threads or os.cpu_count() or 1)
    device = resolve_device(options.device)
    table = load_labelled(options.source, options.root, options.workers, options.limit)
    table = split_by_group(table, options.val_fraction, options.seed)
    table.select("path", "dup_group", "split").write_parquet(out / "split.parquet")
    pixels = decode_cache(
        table, options.input_size, out / f"pixels_{options.input_size}.npy", options.workers, options.progress
    )
    is_val = table.get_column("split").to_numpy() == "val"
    train_rows, val_rows = table.filter(~pl.Series(is_val)), table.filter(pl.Series(is_val))
    train_pixels, val_pixels = pixels[~is_val], pixels[is_val]
    log.info(
        "train %d / val %d images (%d groups held out)",
        len(train_rows),
        len(val_rows),
        val_rows["dup_group"].n_unique(),
    )

    config = AttrNetConfig(
        input_size=options.input_size,
        backbone=options.backbone,
        widths=options.widths,
        depths=options.depths,
        dropout=options.dropout,
    )
    if init_model is not None:
        config = replace(init_model.config, input_size=options.input_size, dropout=options.dropout, tta_flip=False)
    checkpoint = read_checkpoint(last_path) if resume else None
    if checkpoint is not None:
        config = AttrNetConfig.from_dict(checkpoint["config"])
    torch.manual_seed(options.seed)
    model = AttrNet(config)
    pretrained = config.backbone == "inception" or options.init_from is not None
    if init_model is not None:
        initialise_from_model(model, init_model)
    elif pretrained and not resume:
        initialise_from_inception(model)
    model = model.to(device).to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(train_rows) / options.batch_size)
    if options.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, options.steps_per_epoch)
    total_steps = steps_per_epoch * options.epochs
    warmup = max(1, int(options.warmup_epochs * steps_per_epoch))
    trunk_lr = options.lr * (PRETRAINED_LR_SCALE if pretrained else 1.0)
    optimizer = torch.optim.AdamW(
        [
            {"params": list(model.trunk.parameters()), "lr": trunk_lr},
            {"params": list(model.head.parameters()), "lr": options.lr},
        ],
        weight_decay=options.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
        ),
    )
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as err:  # e.g. a run from before the trunk and head had their own learning rates
            raise FaceattrError(f"{last_path}: its optimizer state does not fit this model ({err})") from None
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = {k: checkpoint[k] for k in state}
        log.info("resuming after epoch %d", state["epoch"])

    race_weights = torch.from_numpy(race_loss_weights(train_rows)).float().to(device)  # finalize reuses them
    soft_targets = None
    if options.teacher:
        found = teacher_targets(
            options.teacher, train_rows, out / TEACHER_TARGETS, options.workers, options.progress, device
        )
        if found["age"].shape[1] != config.age_bins:
            raise FaceattrError(f"--teacher {options.teacher}: {found['age'].shape[1]} age bins, not {config.age_bins}")
        soft_targets = {key: torch.from_numpy(value) for key, value in found.items()}
        race_adjustment = -torch.log(race_weights)  # what finalize will add to the race logits
    labels = {
        k: torch.from_numpy(train_rows.get_column(k).to_numpy().astype(np.int64)) for k in ("gender", "race", "age")
    }
    labels["age"] = labels["age"].clamp(0, MAX_AGE)
    train_tensor = torch.from_numpy(train_pixels).permute(0, 3, 1, 2)
    use_amp = device.type == "cuda"

    while state["epoch"] < options.epochs and state["bad_epochs"] < options.patience:
        epoch = state["epoch"]
        started = time.perf_counter()
        model.train()
        generator = torch.Generator().manual_seed(options.seed * 100_003 + epoch)
        torch.manual_seed(options.seed * 100_003 + epoch)
        order = torch.randperm(len(train_rows), generator=generator)
        total_loss, seen = 0.0, 0

        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{options.epochs}", enabled=options.progress)
        for step in bar:
            index = order[step * options.batch_size : (step + 1) * options.batch_size]
            x = augment(train_tensor[index], generator).to(device, non_blocking=True)
            x = x.contiguous(memory_format=torch.channels_last)
            targets = [labels[k][index].to(device) for k in ("gender", "race", "age")]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            loss = multitask_loss(logits, *targets, race_weights, model.age_values)
            if soft_targets is not None:
                soft = {key: value[index].to(device) for key, value in soft_targets.items()}
                alpha = options.distill_weight
                loss = (1 - alpha) * loss + alpha * distillation_loss(logits, soft, race_adjustment)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(index)
            seen += len(index)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        bar.close()
        model.eval()
        val_metrics = _evaluate(model, val_pixels, val_rows, device)
        train_seconds = time.perf_counter() - started
        score = validation_score(val_metrics)
        state["epoch"] = epoch + 1
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        row = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(seen, 1),
            "lr": scheduler.get_last_lr()[-1],  # the head's: --lr on its schedule (the trunk may run slower)
            "seconds": train_seconds,
            "train_images_per_s": seen / train_seconds,
            "val_score": score,
            **{k: val_metrics[k] for k in ("gender_accuracy", "race_accuracy", "race_macro_f1", "age_mae")},
        }
        append_metrics(out / "metrics.parquet", row)
        log.info("epoch %d: %s", epoch + 1, row)
        checkpoint = {
            "format": TRAIN_FORMAT,
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            **state,
        }
        save_atomically(last_path, checkpoint)
        if improved:
            save_atomically(out / CHECKPOINT_BEST, checkpoint)

    best = read_checkpoint(out / CHECKPOINT_BEST)
    model.load_state_dict(best["model"])
    model.load_state_dict(storage_state(model))  # the weights as model.pt will hold them
    model.eval()
    report = finalize(model, val_pixels, val_rows, race_weights.cpu(), device, state)
    model_path = out / MODEL_FILE
    final_config = AttrNetConfig.from_dict({**config.to_dict(), "tta_flip": report["tta_flip"]})
    final_model = AttrNet(final_config)
    final_model.load_state_dict(model.state_dict())
    final_model.temperatures.copy_(torch.tensor(report["calibration"]["temperatures_list"]))
    save_attr_model(
        final_model,
        model_path,
        {
            "name": "faceattr-attr",
            "version": __version__,
            "trained_on": str(options.source),
            "best_epoch": state["best_epoch"],
            "val_metrics": json.dumps(report["overall"]),
        },
    )
    write_json(out / "report.json", report)
    return TrainResult(out, model_path, report)


def initialise_from_inception(model) -> None:
    """Copy the ImageNet Inception-v3 weights (the ones `fid` uses) into the model's Inception trunk."""
    from faceattr_batch.models.inception import load_inception

    full = load_inception().state_dict()
    model.trunk.load_state_dict({name: full[name] for name in model.trunk.state_dict()})


def initialise_from_model(model, source) -> None:
    """Copy another attribute model's trunk and head (same architecture; the input size may differ). Its
    calibration is not carried over: this run refits the temperatures and race bias on its own validation."""
    state = source.state_dict()
    state["temperatures"] = state["temperatures"].new_ones(state["temperatures"].shape)
    state["race_bias"] = state["race_bias"].new_zeros(state["race_bias"].shape)
    model.load_state_dict(state)


def race_loss_weights(train_rows: pl.DataFrame) -> np.ndarray:
    """Race cross-entropy weights proportional to 1/sqrt(class frequency), mean 1."""
    counts = np.bincount(train_rows.get_column("race").to_numpy(), minlength=len(RACES)).astype(np.float64)
    weights = (counts.sum() / (len(RACES) * np.maximum(counts, 1))) ** 0.5
    return weights / weights.mean()


def finalize(model, val_pixels, val_rows, race_weights, device, state) -> dict:
    """Undo the race class weights (logit adjustment), choose test-time mirroring by validation, fit
    temperatures, and build the final validation report."""
    import torch

    from faceattr_batch.metrics import attributes as m

    weighted_metrics = m.overall(predictions_frame(collect_logits(model, val_pixels, device), (1.0,) * 3, val_rows))
    # A loss weighted by w_c learns posteriors tilted by w_c; subtracting log w_c restores the class
    # frequencies, which maximises accuracy (Menon et al. 2021, logit adjustment). Not tuned on validation.
    model.race_bias.copy_(-torch.log(race_weights))  # race_weights: the loss weights, a CPU tensor
    plain = collect_logits(model, val_pixels, device)
    plain_metrics = m.overall(predictions_frame(plain, (1.0, 1.0, 1.0), val_rows))
    model.config = replace(model.config, tta_flip=True)
    mirrored = collect_logits(model, val_pixels, device)
    mirrored_metrics = m.overall(predictions_frame(mirrored, (1.0, 1.0, 1.0), val_rows))
    use_flip = validation_score(mirrored_metrics) > validation_score(plain_metrics)
    model.config = replace(model.config, tta_flip=use_flip)
    logits = mirrored if use_flip else plain
    temps, calibration = fit_temperatures(logits, val_rows)
    calibration["temperatures_list"] = temps
    return {
        "tool_version": __version__,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "tta_flip": use_flip,
        "tta_comparison": {"plain": plain_metrics, "mirrored": mirrored_metrics},
        "race_adjustment": {"bias": model.race_bias.tolist(), "before": weighted_metrics, "after": plain_metrics},
        **validation_report(predictions_frame(logits, temps, val_rows)),
        "calibration": calibration,
    }


def validation_report(frame: pl.DataFrame) -> dict:
    """Overall metrics, race confusion matrix and per race / gender / age band breakdowns of a predictions frame."""
    from faceattr_batch.metrics import attributes as m

    return {
        "n_train_val": {"val": frame.height},
        "overall": m.overall(frame),
        "race_confusion": m.confusion_matrix(frame),
        "by_race": m.breakdown(frame, ["race"]).to_dicts(),
        "by_gender": m.breakdown(frame, ["gender"]).to_dicts(),
        "by_age_band": m.breakdown(frame, ["age_band"]).to_dicts(),
    }


def _evaluate(model, pixels, rows, device) -> dict:
    from faceattr_batch.metrics import attributes as m

    return m.overall(predictions_frame(collect_logits(model, pixels, device), (1.0, 1.0, 1.0), rows))
