"""`faceattr-batch train`: fit the attribute network on a UTKFace-style index, resumably.

Spine: labelled index -> split by duplicate group (no face on both sides) -> decode every chip once into a
uint8 cache -> epochs of batch augmentation + multi-task loss -> per-epoch validation, metrics table and
checkpoints -> best checkpoint -> temperature scaling on validation -> ``model.pt`` + ``report.json``.
The reusable parts (data, losses, calibration, a teacher's targets) live in ``faceattr_batch.training``.

Deterministic given the seed: each epoch's shuffle, augmentation and dropout draw from generators seeded by
(seed, epoch), so a run resumed from its last checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.labels import MAX_AGE
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import write_json, write_parquet_atomically
from faceattr_batch.io.rundir import append_metrics, start_run
from faceattr_batch.models.device import available_cores, resolve_device
from faceattr_batch.models.registry import (
    TRAIN_FORMAT,
    absolute_source,
    load_attr_model,
    read_checkpoint,
    save_atomically,
    save_attr_model,
    storage_state,
)
from faceattr_batch.progress import progress_bar
from faceattr_batch.training.calibration import calibrated_report, overall_metrics, validation_score
from faceattr_batch.training.data import (
    augment,
    decode_cache,
    label_tensors,
    load_labelled,
    pixel_cache,
    refuse_trained_on,
    split_by_fold,
    split_by_group,
    with_training_only_rows,
)
from faceattr_batch.training.folds import cross_fit, is_cross_fit
from faceattr_batch.training.losses import TrainingTargets, race_loss_weights
from faceattr_batch.training.teacher import teacher_targets
from faceattr_batch.training.warm_start import initialise_from_inception, initialise_from_model

log = logging.getLogger(__name__)

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"
MODEL_FILE = "model.pt"
TEACHER_TARGETS = "teacher_targets.npz"  # --teacher: its probabilities on the training faces, computed once
PRETRAINED_LR_SCALE = 0.25  # a pretrained trunk's fraction of --lr (the new head's is 1): fine-tuning, not relearning
MIN_INCEPTION_INPUT = 64
EPOCH_METRICS = ("gender_accuracy", "race_accuracy", "race_macro_f1", "age_mae")


@dataclass(frozen=True)
class TrainOptions:
    source: Path  # an index Parquet from `index`, or a folder (indexed with --hash first)
    out_dir: Path
    root: Path | None = None  # image folder for an index Parquet; default: the root recorded in it
    extra: tuple[Path, ...] = ()  # labelled sources added to the training side only (synthetic faces, say)
    input_size: int = 80
    backbone: str = "resnet"  # "resnet" (from scratch) or "inception" (ImageNet-initialised, models/attr_net.py)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    inception_block: str = "Mixed_6e"  # inception: the last Inception-v3 block kept (earlier = faster)
    dropout: float = 0.1
    init_from: str | None = None  # start from this model (shipped name, file or RUN_DIR): its architecture
    teacher: str | None = None  # also learn this model's (an ensemble's) calibrated outputs: (1 - w) x labels + w x its
    distill_weight: float = 0.5
    extra_teacher_only: bool = False  # the --extra rows learn from the teacher alone, their own labels unused
    epochs: int = 60
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    val_fraction: float = 0.1
    # cross-fitting (training.folds): K models, each validated on one K-th of the groups; fold: the one held out
    folds: int = 1
    fold: int | None = None
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


@dataclass
class _Split:  # the labelled rows and their decoded chips, on either side of the duplicate-group split
    train_rows: pl.DataFrame
    val_rows: pl.DataFrame
    train_pixels: np.ndarray
    val_pixels: np.ndarray


@dataclass
class _Session:
    """What the epochs advance and the checkpoints hold."""

    config: object  # AttrNetConfig
    model: object
    optimizer: object
    scheduler: object
    steps_per_epoch: int
    state: dict  # epoch, best_score, best_epoch, bad_epochs

    def checkpoint(self) -> dict:
        return {
            "format": TRAIN_FORMAT,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.state,
        }


def run(options: TrainOptions, resume: bool = False):
    """Train one model (a ``TrainResult``) or, with ``folds`` > 1, cross-fit K of them and write their out-of-fold
    predictions (a ``training.folds.CrossFitResult``)."""
    if options.fold is None and (options.folds > 1 or resume and is_cross_fit(options.out_dir)):
        return cross_fit(options, _train_one, resume, checkpoint=CHECKPOINT_LAST, model_file=MODEL_FILE)
    return _train_one(options, resume)


def _train_one(options: TrainOptions, resume: bool) -> TrainResult:
    import torch  # heavy: loaded when a training starts, not when the CLI does

    options, init_model = _start(options, resume)
    out = Path(options.out_dir)
    torch.set_num_threads(options.threads or available_cores())
    device = resolve_device(options.device)
    split = _load_split(options, out, resume)
    session = _build_session(options, split, init_model, device, out / CHECKPOINT_LAST if resume else None)
    targets = _training_targets(options, split, session.config, device, out)
    while session.state["epoch"] < options.epochs and session.state["bad_epochs"] < options.patience:
        started = time.perf_counter()
        mean_loss, seen = _train_epoch(session, targets, options, device)
        _end_epoch(session, split, device, out, mean_loss, seen, started)
    return _write_model(session, split, targets.race_weights.cpu(), options, device, out)


def _start(options: TrainOptions, resume: bool):
    """Check the options, read --init-from's model (its architecture replaces the options'), start the RUN_DIR."""
    from faceattr_batch.models.attr_net import BACKBONES, AttrNet  # torch-backed
    from faceattr_batch.models.inception import INCEPTION_BLOCKS

    # model options kept as a resume from another folder reads them
    options = replace(options, **{name: absolute_source(getattr(options, name)) for name in ("teacher", "init_from")})
    init_model = None
    if options.init_from and not resume:
        init_model = load_attr_model(options.init_from)[0]
        if not isinstance(init_model, AttrNet):
            raise FaceattrError(
                f"--init-from {options.init_from}: an ensemble or ONNX file; start from one network (a member's file)"
            )
        arch = init_model.config  # recorded in options.json, so the run says what it trained
        layout = {"backbone": arch.backbone, "widths": arch.widths, "depths": arch.depths}
        options = replace(options, **layout, inception_block=arch.inception_last_block)
    if options.extra_teacher_only and not (options.teacher and options.extra):
        raise FaceattrError("--extra-teacher-only needs --teacher and at least one --extra source")
    if options.backbone not in BACKBONES:
        raise FaceattrError(f"--backbone {options.backbone}: not one of {', '.join(BACKBONES)}")
    if len(options.widths) != len(options.depths):  # checked before the decode, not at the network's build
        shown = ",".join(map(str, options.widths)), ",".join(map(str, options.depths))
        raise FaceattrError(f"--widths {shown[0]} and --depths {shown[1]}: give one depth per width")
    if options.teacher is None and options.distill_weight != TrainOptions.distill_weight:
        raise FaceattrError("--distill-weight weighs --teacher's targets: add --teacher")
    if options.inception_block not in INCEPTION_BLOCKS[: INCEPTION_BLOCKS.index("Mixed_6e") + 1]:
        raise FaceattrError(f"--inception-block {options.inception_block}: not one of Mixed_5b ... Mixed_6e")
    if options.backbone == "inception" and options.input_size < MIN_INCEPTION_INPUT:
        raise FaceattrError(f"the inception backbone needs --input-size {MIN_INCEPTION_INPUT} or more")
    return start_run(options, CHECKPOINT_LAST, "training", resume), init_model


def _load_split(options: TrainOptions, out: Path, resume: bool) -> _Split:
    """Labelled rows split by duplicate group (``split.parquet``), chips decoded once into the RUN_DIR cache."""
    table = load_labelled(options.source, options.root, options.workers, options.limit)
    if options.fold is None:
        table = split_by_group(table, options.val_fraction, options.seed)
    else:
        table = split_by_fold(table, options.folds, options.fold, options.seed)
    sides = table.select("path", "dup_group", "split")
    if resume and (out / "split.parquet").is_file() and not sides.equals(pl.read_parquet(out / "split.parquet")):
        raise FaceattrError(
            f"{out}: the labelled rows changed since the run started, and with them its split (split.parquet): "
            "resumed, it would validate on faces it trained on; start a new run"
        )
    refuse_trained_on(table, {"--init-from": options.init_from, "--teacher": options.teacher})
    write_parquet_atomically(sides, out / "split.parquet")
    table = with_training_only_rows(table, options.extra, options.workers)  # after: split.parquet is the source's
    if not (table.get_column("split") == "train").any():
        raise FaceattrError(
            f"{options.source}: its {sides.height} labelled images form {sides['dup_group'].n_unique()} duplicate "
            "group(s), all held out "
            "for validation: none is left to train on (add faces, or --extra a training-only source)"
        )
    pixels = decode_cache(table, options.input_size, pixel_cache(options), options.workers, options.progress)
    is_val = table.get_column("split").to_numpy() == "val"
    split = _Split(table.filter(~pl.Series(is_val)), table.filter(pl.Series(is_val)), pixels[~is_val], pixels[is_val])
    held_out = split.val_rows["dup_group"].n_unique()
    log.info("train %d / val %d images (%d groups held out)", len(split.train_rows), len(split.val_rows), held_out)
    return split


def _build_session(options: TrainOptions, split: _Split, init_model, device, resume_from: Path | None) -> _Session:
    """The model (fresh, from --init-from, from the ImageNet Inception, or the checkpoint's), its optimizer (the
    trunk slower when pretrained) and warm-up + cosine schedule, and the early-stopping state."""
    import torch

    from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig  # torch-backed

    config = AttrNetConfig(
        input_size=options.input_size,
        backbone=options.backbone,
        widths=options.widths,
        depths=options.depths,
        inception_last_block=options.inception_block,
        dropout=options.dropout,
    )
    if init_model is not None:
        config = replace(init_model.config, input_size=options.input_size, dropout=options.dropout, tta_flip=False)
    checkpoint = read_checkpoint(resume_from) if resume_from is not None else None
    if checkpoint is not None:
        config = AttrNetConfig.from_dict(checkpoint["config"])
    torch.manual_seed(options.seed)
    model = AttrNet(config)
    pretrained = config.backbone == "inception" or options.init_from is not None
    if init_model is not None:
        initialise_from_model(model, init_model)
    elif pretrained and checkpoint is None:
        initialise_from_inception(model)
    model = model.to(device).to(memory_format=memory_format(config))
    steps_per_epoch = min(math.ceil(len(split.train_rows) / options.batch_size), options.steps_per_epoch or math.inf)
    optimizer = torch.optim.AdamW(
        [
            {"params": list(model.trunk.parameters()), "lr": options.lr * (PRETRAINED_LR_SCALE if pretrained else 1)},
            {"params": list(model.head.parameters()), "lr": options.lr},
        ],
        weight_decay=options.weight_decay,
    )
    total_steps = steps_per_epoch * options.epochs
    warmup = max(1, int(options.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
        ),
    )
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0}
    session = _Session(config, model, optimizer, scheduler, steps_per_epoch, state)
    if checkpoint is not None:
        _restore(session, checkpoint, resume_from)
    return session


def memory_format(config):
    """Channels-last, but for a resnet stem under 8 channels: torch 2.13's CPU backward of a 4-channel channels-last
    conv corrupts memory at odd batch sizes (--widths 8,16, batches 7, 9, 15 abort; 16,32 and ours do not)."""
    import torch

    narrow = config.backbone == "resnet" and config.widths[0] // 2 < 8
    return torch.contiguous_format if narrow else torch.channels_last


def _restore(session: _Session, checkpoint: dict, path: Path) -> None:
    session.model.load_state_dict(checkpoint["model"])
    try:
        session.optimizer.load_state_dict(checkpoint["optimizer"])
    except ValueError as err:  # e.g. a run from before the trunk and head had their own learning rates
        raise FaceattrError(f"{path}: its optimizer state does not fit this model ({err})") from None
    session.scheduler.load_state_dict(checkpoint["scheduler"])
    session.state = {k: checkpoint[k] for k in session.state}
    log.info("resuming after epoch %d", session.state["epoch"])


def _training_targets(options: TrainOptions, split: _Split, config, device, out: Path) -> TrainingTargets:
    import torch

    labelled, own_labels = None, split.train_rows
    if options.extra_teacher_only:  # their labels were asked of a generator, not read off the faces
        own = ~split.train_rows.get_column("extra")
        labelled, own_labels = torch.from_numpy(own.to_numpy()), split.train_rows.filter(own)
    race_weights = torch.from_numpy(race_loss_weights(own_labels)).float().to(device)  # calibrated_report reuses them
    targets = TrainingTargets(
        labelled=labelled,
        pixels=torch.from_numpy(split.train_pixels).permute(0, 3, 1, 2),
        labels=label_tensors(split.train_rows, MAX_AGE),
        race_weights=race_weights,
    )
    if options.teacher:
        found = teacher_targets(
            options.teacher, split.train_rows, out / TEACHER_TARGETS, options.workers, options.progress, device
        )
        if found["age"].shape[1] != config.age_bins:
            raise FaceattrError(f"--teacher {options.teacher}: {found['age'].shape[1]} age bins, not {config.age_bins}")
        targets.soft = {key: torch.from_numpy(value) for key, value in found.items()}
        targets.race_adjustment = -torch.log(race_weights)  # what calibrated_report will add to the race logits
    return targets


def _train_epoch(session: _Session, targets: TrainingTargets, options: TrainOptions, device) -> tuple[float, int]:
    """One epoch of augmented batches; its shuffle, augmentation and dropout seeded by (seed, epoch).
    Returns the mean loss and the number of images seen."""
    import torch

    epoch, model = session.state["epoch"], session.model
    model.train()
    generator = torch.Generator().manual_seed(options.seed * 100_003 + epoch)
    torch.manual_seed(options.seed * 100_003 + epoch)
    order = torch.randperm(len(targets.pixels), generator=generator)
    total_loss, seen = 0.0, 0
    use_amp = device.type == "cuda"
    steps = range(session.steps_per_epoch)
    bar = progress_bar(steps, desc=f"epoch {epoch + 1}/{options.epochs}", enabled=options.progress)
    for step in bar:
        index = order[step * options.batch_size : (step + 1) * options.batch_size]
        x = augment(targets.pixels[index], generator).to(device, non_blocking=True)
        x = x.contiguous(memory_format=memory_format(session.config))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        loss = targets.batch_loss(logits, index, options.distill_weight, model.age_values)
        session.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        session.optimizer.step()
        session.scheduler.step()
        total_loss += loss.item() * len(index)
        seen += len(index)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    bar.close()
    return total_loss / max(seen, 1), seen


def _end_epoch(session: _Session, split: _Split, device, out: Path, mean_loss: float, seen: int, started: float):
    """Validate, update the early-stopping state, append the metrics row, then checkpoint (last, and best when
    better): a run cut before the checkpoint redoes this epoch on resume. ``seconds`` counts the validation too."""
    session.model.eval()
    val_metrics = overall_metrics(session.model, split.val_pixels, split.val_rows, device)
    seconds = time.perf_counter() - started
    score = validation_score(val_metrics)
    state = session.state
    state["epoch"] += 1
    improved = score > state["best_score"]
    if improved:
        state.update(best_score=score, best_epoch=state["epoch"], bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    row = {
        "epoch": state["epoch"],
        "train_loss": mean_loss,
        "lr": session.scheduler.get_last_lr()[-1],  # the head's: --lr on its schedule (the trunk may run slower)
        "seconds": seconds,
        "train_images_per_s": seen / seconds,
        "val_score": score,
        **{k: val_metrics[k] for k in EPOCH_METRICS},
    }
    append_metrics(out / "metrics.parquet", row)
    log.info("epoch %d: %s", state["epoch"], row)
    checkpoint = session.checkpoint()
    if improved:  # best first: a last.pt that says the epoch improved always has its best.pt
        save_atomically(out / CHECKPOINT_BEST, checkpoint)
    save_atomically(out / CHECKPOINT_LAST, checkpoint)


def _write_model(session: _Session, split: _Split, race_weights, options: TrainOptions, device, out: Path):
    """The best epoch's weights as ``model.pt`` will hold them, calibrated on validation; ``report.json``."""
    import torch

    from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig  # torch-backed

    model = session.model
    model.load_state_dict(read_checkpoint(out / CHECKPOINT_BEST)["model"])
    model.load_state_dict(storage_state(model))  # the weights as model.pt will hold them
    model.eval()
    report = calibrated_report(model, split.val_pixels, split.val_rows, race_weights, device, session.state)
    final_model = AttrNet(AttrNetConfig.from_dict({**session.config.to_dict(), "tta_flip": report["tta_flip"]}))
    final_model.load_state_dict(model.state_dict())
    final_model.temperatures.copy_(torch.tensor(report["calibration"]["temperatures_list"]))
    meta = {
        "name": "faceattr-attr",
        "tool_version": __version__,  # not the model's version: that is its file's digest (predict)
        "trained_on": str(options.source),
        "best_epoch": session.state["best_epoch"],
        "val_metrics": json.dumps(report["overall"]),
    }
    model_path = save_attr_model(final_model, out / MODEL_FILE, meta)
    write_json(out / "report.json", report)
    return TrainResult(out, model_path, report)
