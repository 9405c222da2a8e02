"""The evaluation a train-gen run logs at intervals: its EMA's samples written to disk and scored as the `fid` and
`predict` commands would: FID / KID against a fixed real subset of the training faces (``metrics.features``, stats
saved as `fid` reads them) and agreement with the attribute model (``models.runtime``, samples read as chips).

``options`` is the run's ``TrainGenOptions`` (eval_samples, real_subset, seed, workers, device, attr_model, source).
"""

from __future__ import annotations

import logging
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.decode import load_chip
from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics.features import image_stats
from faceattr_batch.metrics.fid_stats import ALL, frechet_distance, kid, load_stats, save_stats
from faceattr_batch.models.device import resolve_device
from faceattr_batch.models.registry import resolve_attr_source
from faceattr_batch.models.runtime import ModelRunner, split_cores
from faceattr_batch.models.sampling import write_samples

log = logging.getLogger(__name__)


def check_ready(options) -> None:
    """What the evaluations need, checked before training (the first is thousands of iterations in): the FID
    Inception weights installed, and ``--attr-model`` found."""
    from faceattr_batch.models.inception import installed_helper_weights  # torch-backed

    installed_helper_weights(" (or train with --no-eval)")
    resolve_attr_source(options.attr_model)


def evaluate(ema, config, table: pl.DataFrame, options, out: Path, fid_network=None) -> dict:
    """FID and KID (fixed real subset, both sides area-resized to the generator's resolution) and attribute
    agreement of ``options.eval_samples`` EMA samples whose conditions follow the table's labels.
    ``fid_network`` replaces the Inception network (tests pass a tiny one)."""
    from faceattr_batch.models.inception import load_inception  # torch-backed

    samples = out / "eval_samples"
    shutil.rmtree(samples, ignore_errors=True)
    conditions = table.sample(n=options.eval_samples, seed=options.seed + 1, with_replacement=True)
    wanted = conditions.select("gender", "race", "age")
    written = write_samples(ema, wanted, samples, seed=options.seed + 2, size=config.resolution, progress=False)
    written = written.sort("file")  # the order `fid` reads a folder in: it seeds which rows KID draws
    paths = [str(samples / name) for name in written.get_column("file")]
    network = fid_network if fid_network is not None else load_inception(device=resolve_device(options.device))
    real = _real_stats(network, config.resolution, table, options, out)
    fake = image_stats(paths, network, resize_to=config.resolution, workers=options.workers, seed=1)
    fid, _ = frechet_distance(*real.mean_cov(), *fake.mean_cov())
    kid_mean, _, _ = kid(real.reservoir, fake.reservoir, seed=0)  # the fid command's subsets
    result = {"fid": fid, "kid_mean": kid_mean}
    try:
        result.update(agreement(paths, written, options))
    except FaceattrError as err:  # no attribute model yet: FID alone
        log.warning("attribute agreement skipped: %s", err)
    return result


def _real_stats(network, resolution: int, table: pl.DataFrame, options, out: Path):
    """The real subset's feature stats, computed once into ``real_stats_<resolution>.npz`` (a stats file `fid`
    reads too) and read back from it."""
    path = out / f"real_stats_{resolution}.npz"
    if not path.is_file():
        subset = table.sample(n=min(options.real_subset, table.height), seed=options.seed, shuffle=True)
        by_name: dict[str, str] = {}
        for file in subset.get_column("file"):
            by_name.setdefault(Path(file).name, file)  # one file per name, ordered by name as `fid` lists a folder
        files = [by_name[name] for name in sorted(by_name)]
        stats = image_stats(files, network, resize_to=resolution, workers=options.workers, seed=0)
        meta = {"source": f"{options.source} (train-gen real subset)", "size": str(resolution), "by": ""}
        save_stats(path, {ALL: stats}, meta)
    return load_stats(path)[0][ALL]


def agreement(paths: list[str], labels: pl.DataFrame, options) -> dict:
    """How far the attribute model reads back the requested labels (gender, race, age of ``labels``, aligned
    with ``paths``): gender and race agreement, age MAE in years. The samples are read as chips, as `predict`
    does by default."""
    import torch

    device = resolve_device(options.device)
    threads = torch.get_num_threads()  # the torch runtime sets its own; training goes on with the run's
    try:
        runner = ModelRunner.load(options.attr_model, device, "auto", split_cores(device.type, None, None)[1])
        parts = []
        for batch in iter_batches(paths, partial(load_chip, size=runner.input_size), 256, options.workers):
            if batch.errors:
                raise FaceattrError(f"{len(batch.errors)} evaluation samples could not be read back")
            parts.append(runner.infer(batch.items))
    finally:
        torch.set_num_threads(threads)
    outputs = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    gender, race, age = (labels.get_column(k).to_numpy() for k in ("gender", "race", "age"))
    return {
        "gender_agreement": float(np.mean((outputs["p_female"] >= 0.5) == (gender == 1))),
        "race_agreement": float(np.mean(outputs["race_probs"].argmax(axis=1) == race)),
        "age_mae_vs_requested": float(np.mean(np.abs(outputs["age_median"] - age))),
    }
