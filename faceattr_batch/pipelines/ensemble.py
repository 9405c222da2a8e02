"""`faceattr-batch ensemble`: several trained attribute models -> one model file that averages them.

The members must have been trained on the same index with the same split (seed, validation share): the
ensemble's temperatures are fitted, and its report computed, on that split's validation faces, which none of
the members saw (a member's run folder with a ``split.parquet`` is checked). Members' large weights are stored
in fp16, or int8 with ``int8`` (``registry.storage_state``: two Inception members fit the 25 MB a shipped model
may take only so); the figures are those of the stored weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import check_writable, refuse_overlap, write_json
from faceattr_batch.io.digest import file_digest
from faceattr_batch.models.registry import (
    ATTR_FORMAT,
    ENSEMBLE_FORMAT,
    RUN_DIR_MODELS,
    TRAIN_FORMAT,
    load_attr_model,
    read_checkpoint,
    resolve_attr_source,
    restore_state,
    save_attr_ensemble,
    storage_state,
)
from faceattr_batch.training.calibration import (
    collect_logits,
    fit_temperatures,
    predictions_frame,
    validation_report,
)
from faceattr_batch.training.data import decode_cache, load_labelled, refuse_trained_on, split_by_group


@dataclass(frozen=True)
class EnsembleOptions:
    source: Path  # the index Parquet (or folder) the members were trained on
    members: tuple[str, ...]  # shipped names, model files or RUN_DIRs
    out: Path  # the ensemble model file
    root: Path | None = None
    val_fraction: float = 0.1  # as the members' runs had it
    seed: int = 0  # as the members' runs had it
    int8: bool = False  # store the members' large weights as int8 (half the size of fp16)
    no_mirror: bool = False  # drop the members' test-time mirror: one view each, half the cost
    workers: int = 2
    progress: bool = True


@dataclass
class EnsembleResult:
    out_dir: Path
    model_path: Path  # the ensemble model file
    report: dict = field(default_factory=dict)  # as written beside it (.report.json)


def run(options: EnsembleOptions) -> EnsembleResult:
    import torch  # heavy: loaded when the command runs, not when the CLI starts

    from faceattr_batch.models.attr_ensemble import AttrEnsemble  # torch-backed
    from faceattr_batch.models.attr_net import AttrNet  # torch-backed

    if len(options.members) < 2:
        raise FaceattrError("an ensemble needs two or more members")
    out = Path(options.out)
    # predict -m tells a model by its suffix (.onnx: ONNX), and so the SOURCE index is never written over
    if not out.is_dir() and out.suffix.lower() != ".pt":
        raise FaceattrError(f"-o {out}: name the ensemble file .pt")
    given = {}  # the model files by content: one given twice would count double
    for source in options.members:  # the ensemble must not replace a member's weights, nor sit in its RUN_DIR
        member = resolve_attr_source(source)
        if (twin := given.get(digest := file_digest(member))) is not None:
            raise FaceattrError(f"the member {source} is the same model as {twin}: give each model once")
        given[digest] = source
        # a member's RUN_DIR holds no ensemble; beside a member's file, not under a name -m RUN_DIR would read
        read_there = (lambda name: True) if Path(source).is_dir() else RUN_DIR_MODELS.__contains__
        why = f"it would sit in the member's RUN_DIR {member.parent}; name a file elsewhere"
        refuse_overlap(out, "-o", {f"the member {source}": member}, claimed={why: (member.parent, read_there)})
    _refuse_replacing(out)
    check_writable(out, "-o")  # before the validation faces are decoded and read
    members = []
    for source in options.members:
        net, _ = load_attr_model(source)
        if not isinstance(net, AttrNet):
            raise FaceattrError(
                f"{source}: not a trained attribute network (ONNX files and ensembles can't be members)"
            )
        net.load_state_dict(restore_state(storage_state(net, int8=options.int8)))  # evaluate what the file holds
        if options.no_mirror:
            net.config = replace(net.config, tta_flip=False)
        members.append(net)
    try:
        ensemble = AttrEnsemble(members).eval()
    except ValueError as err:
        raise FaceattrError(str(err)) from None

    table = load_labelled(options.source, options.root, options.workers)
    table = split_by_group(table, options.val_fraction, options.seed)
    val_rows = table.filter(pl.col("split") == "val")
    refuse_trained_on(table, {f"member {i + 1}": source for i, source in enumerate(options.members)})
    pixels = decode_cache(val_rows, ensemble.config.input_size, None, options.workers, options.progress)
    desc = "validation" if options.progress else None
    logits = collect_logits(ensemble, pixels, torch.device("cpu"), 128, desc)
    temps, calibration = fit_temperatures(logits, val_rows)
    ensemble.temperatures.copy_(torch.tensor(temps))
    members_alone = []  # each member on the same faces, with its own temperatures
    for i, net in enumerate(members):
        member_logits = collect_logits(net, _member_pixels(ensemble, i, pixels), torch.device("cpu"), 128, desc)
        frame = predictions_frame(member_logits, net.temperatures.tolist(), val_rows)
        members_alone.append(validation_report(frame)["overall"])
    report = {
        "tool_version": __version__,
        "members": list(options.members),
        "members_alone": members_alone,
        "tta_flip": [net.config.tta_flip for net in members],
        **validation_report(predictions_frame(logits, temps, val_rows)),
        "calibration": calibration,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_attr_ensemble(
        ensemble,
        out,
        {
            "name": "faceattr-attr-ensemble",
            "tool_version": __version__,  # not the model's version: that is its file's digest (predict)
            "members": json.dumps(list(options.members)),
            "trained_on": str(options.source),
            "val_metrics": json.dumps(report["overall"]),
        },
        int8=options.int8,
    )
    write_json(out.with_suffix(".report.json"), report)
    return EnsembleResult(out.parent, out, report)


def _refuse_replacing(out: Path) -> None:
    """An existing ``-o`` is replaced only when it is an ensemble (this command run again): another file (a train
    run's model.pt, anything else of the user's) is refused before any work."""
    if not out.is_file():
        return
    try:
        kind = read_checkpoint(out, (ATTR_FORMAT, TRAIN_FORMAT, ENSEMBLE_FORMAT))["format"]
    except FaceattrError:
        kind = None
    if kind != ENSEMBLE_FORMAT:
        what = "a trained model" if kind else "not a faceattr model"
        raise FaceattrError(f"-o {out}: exists and is {what}, not an ensemble; name another file")


def _member_pixels(ensemble, i: int, pixels: np.ndarray) -> np.ndarray:
    """The validation chips as the ensemble feeds member ``i`` (for the member-alone comparison; a member decoding
    at its own size reads slightly different pixels)."""
    import torch

    chips = ensemble.member_pixels(i, torch.from_numpy(pixels).permute(0, 3, 1, 2)).to(torch.uint8)
    return np.ascontiguousarray(chips.permute(0, 2, 3, 1).numpy())
