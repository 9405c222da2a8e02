"""Cross-fitting (``train --folds K``): out-of-fold predictions for every labelled image of a set, so that its
suspect labels (``metrics.suspects``) come from models that never learned those labels.

The duplicate groups are dealt to K folds (``training.data.split_by_fold``). Fold k's model trains on the other
K - 1 folds and holds fold k out as its validation side (checkpoint choice, temperatures), then predicts it. Each
fold is an ordinary training RUN_DIR (``fold_<k>``, resumed on its own), its chips decoded once beside them.
``oof.parquet`` holds each image's prediction by the one model that did not train on it, in the predictions schema,
marked ``in_training`` true with ``training_role`` validation (the fold's model chose its checkpoint and
temperatures on those rows, never fitted their labels), so that ``report oof.parquet --suspects FILE`` ranks them.
``report.json``: each fold's validation figures and the out-of-fold figures over every image.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError
from faceattr_batch.index.build import IndexOptions, build_index, write_index
from faceattr_batch.io.atomic import write_json, write_parquet_atomically
from faceattr_batch.io.rundir import start_run
from faceattr_batch.metrics.attributes import overall
from faceattr_batch.models.device import resolve_device
from faceattr_batch.models.registry import load_attr_model
from faceattr_batch.schema import float_outputs, predictions_table, true_label_codes
from faceattr_batch.training.calibration import collect_logits
from faceattr_batch.training.data import load_labelled, pixel_cache, split_by_fold, with_training_only_rows

PREDICTIONS_FILE = "oof.parquet"
OPTIONS_FILE = "options.json"
INDEX_FILE = "index.parquet"  # a folder given as the source, indexed once


@dataclass
class CrossFitResult:
    out_dir: Path
    predictions_path: Path
    report: dict


def fold_dir(out_dir: Path, fold: int) -> Path:
    return Path(out_dir) / f"fold_{fold}"


def is_cross_fit(out_dir: Path) -> bool:
    """``out_dir`` holds a cross-fit's folds (so ``--resume`` without ``--folds`` continues it)."""
    return fold_dir(out_dir, 0).is_dir()


def cross_fit(options, train_one: Callable, resume: bool, *, checkpoint: str, model_file: str) -> CrossFitResult:
    """Train ``options.folds`` models with ``train_one(fold_options, resume)`` (``pipelines.train``'s one-model
    run; ``checkpoint`` and ``model_file`` name its files in a RUN_DIR), then write their out-of-fold predictions.
    ``resume``: finished folds are kept, an interrupted one continues from its ``checkpoint``."""
    if options.folds < 2 and not resume:  # a resume reads the run's own --folds
        raise FaceattrError(f"--folds {options.folds}: cross-fitting needs at least 2 folds")
    if (Path(options.out_dir) / checkpoint).is_file():
        raise FaceattrError(f"{options.out_dir} holds a single training run ({checkpoint}): cross-fit into another -o")
    options = start_run(options, OPTIONS_FILE, "cross-fitting", resume)
    if options.folds < 2:  # the saved options of a run that was not a cross-fit
        raise FaceattrError(f"{options.out_dir}: not a cross-fitting run (its options say --folds {options.folds})")
    out = Path(options.out_dir)
    written = [out / OPTIONS_FILE] + ([] if (out / INDEX_FILE).exists() else [out / INDEX_FILE])
    indexed = _indexed(options, out)
    table = load_labelled(indexed.source, indexed.root, options.workers, options.limit)
    try:
        split_by_fold(table, options.folds, 0, options.seed)  # enough duplicate groups for the folds?
    except FaceattrError:
        if not resume:  # nothing trained: leave no run behind, or the corrected command is told to --resume this one
            for path in written:
                path.unlink(missing_ok=True)
        raise
    for fold in range(options.folds):
        run_dir = fold_dir(out, fold)
        if not (run_dir / model_file).is_file():
            train_one(replace(indexed, out_dir=run_dir, fold=fold), (run_dir / checkpoint).is_file())
    pixels = np.load(pixel_cache(options), mmap_mode="r")
    # the folds' chips: the source's rows, then the --extra rows (as each fold's table has them)
    cached = with_training_only_rows(split_by_fold(table, options.folds, 0, options.seed), options.extra, 0).height
    if len(pixels) != cached:
        raise FaceattrError(f"{out}: its decoded chips ({len(pixels)}) do not match the {cached} labelled rows")
    pixels = pixels[: table.height]
    device = resolve_device(options.device)
    parts, folds = [], []
    for fold in range(options.folds):
        held_out = split_by_fold(table, options.folds, fold, options.seed)["split"].to_numpy() == "val"
        rows = table.filter(pl.Series(held_out))
        parts.append(_fold_predictions(fold_dir(out, fold), model_file, pixels[held_out], rows, device, options))
        validation = json.loads((fold_dir(out, fold) / "report.json").read_text())["overall"]
        folds.append({"fold": fold, "n": rows.height, "validation": validation})
    frame = predictions_table(pl.concat(parts).sort("path"))
    path = out / PREDICTIONS_FILE
    write_parquet_atomically(frame, path)
    report = {"tool_version": __version__, "folds": folds, "out_of_fold": overall(frame), "predictions": str(path)}
    write_json(out / "report.json", report)
    return CrossFitResult(out, path, report)


def _indexed(options, out: Path):
    """``options`` reading an index Parquet: a folder is indexed (with hashes) once, into ``INDEX_FILE`` beside the
    folds, not once per fold and again for the predictions."""
    folder = Path(options.source)
    if not folder.is_dir():
        return options
    index = out / INDEX_FILE
    if not index.is_file():
        write_index(build_index(IndexOptions(root=folder, hash=True, workers=options.workers)), index)
    return replace(options, source=index, root=None)


def _fold_predictions(run_dir: Path, model_file: str, pixels: np.ndarray, rows: pl.DataFrame, device, options):
    """Fold model's calibrated predictions on the rows it held out, with their labels, as predictions columns."""
    import torch

    from faceattr_batch.models.attr_net import AttrLogits, calibrated_outputs  # torch-backed

    model = load_attr_model(run_dir / model_file)[0].to(device)
    logits = AttrLogits(*collect_logits(model, np.ascontiguousarray(pixels), device))
    with torch.inference_mode():
        outputs = calibrated_outputs(logits, model.temperatures.cpu())
    columns = float_outputs({name: value.numpy() for name, value in outputs._asdict().items()})
    return rows.select(pl.col("file").alias("path"), *true_label_codes()).with_columns(
        *(pl.Series(name, values) for name, values in columns.items()),
        model_name=pl.lit(f"{run_dir.name} of {options.folds} (cross-fitted)"),
        model_version=pl.lit(__version__),
        in_training=pl.lit(True),
        training_role=pl.lit("validation"),
    )
