"""Images -> ``FeatureStats`` with the FID Inception network (clean-fid's ``features.py``): usable by any pipeline.

Paths -> ``batches.iter_batches`` (decode + the metric's resize, ``resize.load_for_inception``, in worker
processes) -> the network -> ``FeatureStats.update``. With labels (one per path), each label's slice gets its own
stats beside ``ALL``: the bundle that fid's ``--by`` and its saved stats hold.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from functools import partial

import numpy as np

from faceattr_batch.data.batches import Batch, iter_batches
from faceattr_batch.metrics.fid_stats import ALL, FeatureStats
from faceattr_batch.metrics.resize import INPUT_SIZE, load_for_inception
from faceattr_batch.models.device import available_cores
from faceattr_batch.progress import progress_bar

log = logging.getLogger(__name__)

ITEM_BYTES = 3 * INPUT_SIZE**2 * 4  # one decoded image: float32 3 x 299 x 299
DEFAULT_RESERVOIR = 10_000  # KID features kept per side (and per slice)


def network_device(network):
    """The torch device of a network's parameters (cpu for a callable without parameters)."""
    import torch

    if not hasattr(network, "parameters"):
        return torch.device("cpu")
    return next(iter(network.parameters()), torch.empty(0)).device


def add_batch(
    bundle: dict[str, FeatureStats],
    batch: Batch,
    network,
    device,
    labels: Sequence[str | None] | None = None,
    capacity: int = DEFAULT_RESERVOIR,
    seed: int = 0,
) -> None:
    """A decoded batch's features into ``bundle``: ``ALL``, and with ``labels`` (one per path of the batch) each
    label's slice. The caller holds ``torch.inference_mode``."""
    if batch.ok:
        ok_labels = None if labels is None else [labels[i] for i in batch.ok]
        add_features(bundle, batch_features(batch, network, device), ok_labels, capacity, seed)


def batch_features(batch: Batch, network, device) -> np.ndarray:
    """The pool3 features of a batch's decoded images (float32, one row per ``batch.ok``)."""
    import torch

    inputs = torch.from_numpy(batch.items).to(device, non_blocking=True)
    return network(inputs).float().cpu().numpy()


def add_features(
    bundle: dict[str, FeatureStats],
    features: np.ndarray,
    labels: Sequence[str | None] | None,
    capacity: int = DEFAULT_RESERVOIR,
    seed: int = 0,
) -> None:
    """Rows of features into ``bundle``'s ``ALL`` and, with ``labels`` (one per row), each label's slice."""
    _add(bundle, ALL, features, capacity, seed)
    if labels is not None:
        for label in sorted({x for x in labels if x is not None}):
            rows = [j for j, x in enumerate(labels) if x == label]
            _add(bundle, label, features[rows], capacity, seed)


def _add(bundle: dict[str, FeatureStats], key: str, features: np.ndarray, capacity: int, seed: int) -> None:
    if key not in bundle:
        bundle[key] = FeatureStats(features.shape[1], capacity, seed)
    bundle[key].update(features)


def extract(
    paths: Sequence[str],
    network,
    *,
    resize_to: int | None = None,
    labels: Sequence[str | None] | None = None,
    batch_size: int = 50,
    workers: int = 2,
    capacity: int = DEFAULT_RESERVOIR,
    seed: int = 0,
    progress: bool = False,
    desc: str = "features",
) -> tuple[dict[str, FeatureStats], dict[str, int]]:
    """The stats bundle of ``paths`` (``ALL``, and a slice per label when ``labels`` are given) and the decode
    errors counted by reason. Files that do not decode are counted, never raised."""
    import torch

    device = network_device(network)
    bundle: dict[str, FeatureStats] = {}
    errors: Counter = Counter()
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(available_cores())
    load = partial(load_for_inception, resize_to=resize_to)
    try:
        with (
            torch.inference_mode(),
            progress_bar(total=len(paths), desc=desc, unit="img", enabled=progress) as bar,
        ):
            for batch in iter_batches(paths, load, batch_size, workers):
                errors.update(batch.errors.values())
                batch_labels = None if labels is None else labels[batch.start : batch.start + len(batch.paths)]
                add_batch(bundle, batch, network, device, batch_labels, capacity, seed)
                bar.update(len(batch.paths))
    finally:
        torch.set_num_threads(threads)
    if ALL not in bundle:
        bundle[ALL] = FeatureStats(1, capacity, seed)
    return bundle, dict(errors)


def image_stats(
    paths: list[str],
    network,
    *,
    resize_to: int | None = None,
    batch_size: int = 50,
    workers: int = 2,
    progress: bool = False,
    seed: int = 0,
) -> FeatureStats:
    """The ``ALL`` stats of ``paths`` (decode errors are logged and skipped)."""
    bundle, errors = extract(
        paths, network, resize_to=resize_to, batch_size=batch_size, workers=workers, seed=seed, progress=progress
    )
    if errors:
        log.warning("%d of %d images could not be decoded and were skipped", sum(errors.values()), len(paths))
    return bundle[ALL]
